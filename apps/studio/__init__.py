"""The sphinx_vi studio: detect → segment → edit in the browser."""
