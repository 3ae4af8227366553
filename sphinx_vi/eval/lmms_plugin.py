"""lmms-eval's entry point for sphinx_vi (`lmms-eval --model sphinx_vi --model_args pretrained=DIR`).

Kept light: lmms-eval loads every `lmms_eval.models` entry point whenever it imports its model
registry; the model class itself is imported only when a run asks for it.
"""

from lmms_eval.models.registry_v2 import ModelManifest

MANIFEST = ModelManifest(model_id="sphinx_vi", simple_class_path="sphinx_vi.eval.lmms_model.SphinxViLmms")
