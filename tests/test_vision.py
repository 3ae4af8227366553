import open_clip
import pytest
import torch
from transformers import (
    Blip2Config,
    Blip2Model,
    Blip2QFormerConfig,
    Blip2QFormerModel,
    CLIPVisionConfig,
    CLIPVisionModel,
    Dinov2Config,
    Dinov2Model,
    SiglipVisionConfig,
    SiglipVisionModel,
)

from sphinx_vi.vision import EncoderSpec, MixedVisionEncoder, VisionConfig, WeightsNotFoundError, build_backend
from sphinx_vi.vision.convnext import TINY_OPEN_CLIP_MODEL
from sphinx_vi.weights import IncompleteWeightsError

VIT = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2, image_size=32, patch_size=8)
QF = dict(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64, encoder_hidden_size=24, cross_attention_frequency=1, vocab_size=8)


def _pixels(n=3, size=32):
    return torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize(
    "backend, arch, has_grid",
    [
        ("clip_convnext", {"open_clip_model": TINY_OPEN_CLIP_MODEL}, 2),
        ("clip_vit", VIT, 4),
        ("dinov2", {**VIT, "mlp_ratio": 2}, 4),
        ("siglip", {**VIT, "vision_use_head": False}, 4),
    ],
)
def test_grid_backends_random_init(backend, arch, has_grid):
    enc = build_backend(EncoderSpec(backend=backend, arch={k: v for k, v in arch.items() if k != "intermediate_size" or backend != "dinov2"}))
    feats = enc(_pixels())
    assert feats.cls.shape == (3, enc.width)
    assert feats.grid.shape[:2] == (3, enc.width) and feats.grid.shape[-1] == has_grid
    assert not any(p.requires_grad for p in enc.parameters())  # frozen by default


def _assert_same_features(a, b, pixels):
    fa, fb = a(pixels), b(pixels)
    torch.testing.assert_close(fa.cls, fb.cls)
    torch.testing.assert_close(fa.grid, fb.grid)


def test_open_clip_convnext_loads_from_an_open_clip_checkpoint_file(tmp_path):
    torch.manual_seed(1)
    clip = open_clip.create_model(TINY_OPEN_CLIP_MODEL)  # the library's own model and format
    path = tmp_path / "open_clip_pytorch_model.bin"  # as an open_clip hub snapshot names it
    torch.save(clip.state_dict(), path)
    spec = EncoderSpec(backend="clip_convnext", arch={"open_clip_model": TINY_OPEN_CLIP_MODEL}, pretrained=str(path))
    loaded = build_backend(spec, load_weights=True)
    torch.testing.assert_close(loaded.trunk.stem[0].weight, clip.visual.trunk.stem[0].weight)
    rebuilt = build_backend(EncoderSpec(backend="clip_convnext", arch=loaded.architecture()))
    rebuilt.load_state_dict(loaded.state_dict())  # same module tree without open_clip
    _assert_same_features(loaded, rebuilt, _pixels(size=64))
    from_dir = build_backend(EncoderSpec(backend="clip_convnext", arch={"open_clip_model": TINY_OPEN_CLIP_MODEL},
                                         pretrained=str(tmp_path)), load_weights=True)  # the snapshot directory itself
    torch.testing.assert_close(from_dir.trunk.stem[0].weight, clip.visual.trunk.stem[0].weight)


@pytest.mark.parametrize(
    "backend, model_cls, config_cls, kwargs",
    [
        ("clip_vit", CLIPVisionModel, CLIPVisionConfig, VIT),
        ("dinov2", Dinov2Model, Dinov2Config, {k: v for k, v in VIT.items() if k != "intermediate_size"}),
        ("siglip", SiglipVisionModel, SiglipVisionConfig, VIT),
    ],
)
def test_transformers_towers_load_from_a_saved_directory(tmp_path, backend, model_cls, config_cls, kwargs):
    torch.manual_seed(2)
    original = model_cls(config_cls(**kwargs)).eval()
    original.save_pretrained(tmp_path / backend)
    enc = build_backend(EncoderSpec(backend=backend, pretrained=str(tmp_path / backend)), load_weights=True)
    first = next(iter(original.state_dict()))
    torch.testing.assert_close(enc.model.state_dict()[first], original.state_dict()[first])
    # the architecture recorded for saving rebuilds the same tower
    rebuilt = build_backend(EncoderSpec(backend=backend, arch=enc.architecture()))
    rebuilt.load_state_dict(enc.state_dict())
    _assert_same_features(enc, rebuilt, _pixels())


def _tiny_blip2() -> Blip2Model:
    torch.manual_seed(3)
    return Blip2Model(Blip2Config(
        vision_config=dict(hidden_size=24, intermediate_size=48, num_hidden_layers=1, num_attention_heads=2, image_size=16, patch_size=8),
        qformer_config=QF,
        text_config=dict(model_type="opt", vocab_size=50, hidden_size=16, num_hidden_layers=1, ffn_dim=32, num_attention_heads=2,
                         word_embed_proj_dim=16, max_position_embeddings=32),
        num_query_tokens=6,
    ))


def test_qformer_loads_from_a_full_blip2_checkpoint_sharded_or_not(tmp_path):
    blip2 = _tiny_blip2()
    blip2.save_pretrained(tmp_path / "blip2")
    blip2.save_pretrained(tmp_path / "sharded", max_shard_size="20KB")  # several shards + model.safetensors.index.json
    assert len(list((tmp_path / "sharded").glob("*.safetensors"))) > 1
    for directory in ("blip2", "sharded"):
        spec = EncoderSpec(backend="qformer", source="x", pretrained=str(tmp_path / directory))
        enc = build_backend(spec, load_weights=True)
        assert spec.num_queries == 6
        torch.testing.assert_close(enc.query_tokens.data, blip2.query_tokens.data)
        for key, value in blip2.qformer.state_dict().items():  # every Q-Former weight, not a sample
            torch.testing.assert_close(enc.model.state_dict()[key], value)


def test_a_qformer_without_its_queries_or_weights_is_refused(tmp_path):
    """Blip2QFormerModel alone has no learned queries; a checkpoint missing weights would leave them random."""
    Blip2QFormerModel(Blip2QFormerConfig(**QF)).save_pretrained(tmp_path / "qformer")
    with pytest.raises(ValueError, match="not a full BLIP-2 checkpoint"):
        build_backend(EncoderSpec(backend="qformer", source="x", pretrained=str(tmp_path / "qformer")), load_weights=True)
    blip2 = _tiny_blip2()
    state = {k: v for k, v in blip2.state_dict().items() if "qformer.encoder.layer.0.output_query." not in k}
    blip2.save_pretrained(tmp_path / "cut", state_dict=state)
    with pytest.raises(IncompleteWeightsError, match=r"4 missing \(e.g. encoder.layer.0.output_query"):
        build_backend(EncoderSpec(backend="qformer", source="x", pretrained=str(tmp_path / "cut")), load_weights=True)
    blip2.save_pretrained(tmp_path / "noq", state_dict={k: v for k, v in blip2.state_dict().items() if k != "query_tokens"})
    with pytest.raises(IncompleteWeightsError, match="query_tokens"):
        build_backend(EncoderSpec(backend="qformer", source="x", pretrained=str(tmp_path / "noq")), load_weights=True)


def test_a_tower_checkpoint_missing_weights_is_refused(tmp_path):
    torch.manual_seed(2)
    clip = CLIPVisionModel(CLIPVisionConfig(**VIT))
    state = {k: v for k, v in clip.state_dict().items() if ".layers.1." not in k}
    clip.save_pretrained(tmp_path / "clip", state_dict=state)
    with pytest.raises(IncompleteWeightsError, match=r"encoder 'clip_vit'.*missing"):
        build_backend(EncoderSpec(backend="clip_vit", pretrained=str(tmp_path / "clip")), load_weights=True)


def test_hub_ids_need_permission():
    spec = EncoderSpec(backend="clip_vit", pretrained="openai/clip-vit-large-patch14")
    with pytest.raises(WeightsNotFoundError, match="not a local path.*allow_download"):
        build_backend(spec, load_weights=True, allow_download=False)
    with pytest.raises(ValueError, match="unknown vision backend 'nope'"):
        build_backend(EncoderSpec(backend="nope"))
    with pytest.raises(ValueError, match="unknown encoder field"):
        EncoderSpec.from_dict({"backend": "clip_vit", "pretrianed": "x"})


def _mixed(merge: bool, with_qformer: bool = True) -> MixedVisionEncoder:
    specs = [
        EncoderSpec(backend="clip_convnext", arch={"open_clip_model": TINY_OPEN_CLIP_MODEL}, image_size=64),
        EncoderSpec(backend="clip_vit", arch=VIT),
    ]
    if with_qformer:
        specs.append(EncoderSpec(backend="qformer", source="clip_vit", num_queries=3, arch=QF))
    cfg = VisionConfig(encoders=specs, grid_size=4, merge_2x2=merge, views_grid=2, resolution=32)
    return MixedVisionEncoder(cfg, [build_backend(s) for s in specs], llm_width=48)


@pytest.mark.parametrize("merge, expected", [(False, 2 + 3 + 1 + 16), (True, 2 + 3 + 1 + 4)])
def test_mixed_encoder_tokens_per_view(merge, expected):
    enc = _mixed(merge)
    assert enc.layout.tokens_per_view == expected
    out = enc(torch.rand(2, 5, 3, 32, 32))
    assert out.shape == (2, 5 * expected, 48)


def test_mixed_encoder_trains_only_its_own_layers():
    enc = _mixed(False)
    trainable = {n for n, p in enc.named_parameters() if p.requires_grad}
    assert trainable == {
        "projector.0.weight", "projector.0.bias", "projector.1.weight", "projector.1.bias",
        "qformer_projector.0.weight", "qformer_projector.0.bias", "qformer_projector.1.weight", "qformer_projector.1.bias",
        "qformer.source_proj.weight", "qformer.source_proj.bias", "image_begin", "image_end",
    }
    enc.train()
    assert not enc.encoders["clip_vit"].model.training  # frozen towers stay in eval mode
    enc(torch.rand(1, 5, 3, 32, 32)).sum().backward()
    assert enc.qformer.source_proj.weight.grad is not None  # reaches through the frozen Q-Former
    assert enc.projector[0].weight.grad is not None


def test_mixed_encoder_names_its_adapters_and_its_towers():
    """Every parameter is either a tower's (pretrained, frozen by default) or an adapter (always trained)."""
    enc = _mixed(False)
    names = {id(p): n for n, p in enc.named_parameters()}
    adapters = {names[id(p)] for p in enc.adapter_parameters()}
    towers = {names[id(p)] for p in enc.tower_parameters()}
    assert adapters == {n for n, p in enc.named_parameters() if p.requires_grad}  # what a fresh encoder trains
    assert not adapters & towers and adapters | towers == set(names.values())
    assert "qformer.source_proj.weight" in adapters and "qformer.model.layernorm.weight" in towers
    enc.set_towers_trainable(True)
    assert all(p.requires_grad for p in enc.parameters())
    enc.set_towers_trainable(False)
    assert {n for n, p in enc.named_parameters() if p.requires_grad} == adapters  # adapters untouched both ways


def test_mixed_encoder_validates_its_config():
    specs = [EncoderSpec(backend="qformer", source="clip_vit", arch=QF)]
    with pytest.raises(ValueError, match="at least one grid encoder"):
        MixedVisionEncoder(VisionConfig(encoders=specs), [build_backend(s) for s in specs], 16)
    specs = [EncoderSpec(backend="clip_vit", arch=VIT), EncoderSpec(backend="qformer", source="dino", arch=QF)]
    with pytest.raises(ValueError, match="qformer source 'dino'"):
        MixedVisionEncoder(VisionConfig(encoders=specs, grid_size=4), [build_backend(s) for s in specs], 16)
    specs = [EncoderSpec(backend="clip_vit", arch=VIT)]
    with pytest.raises(ValueError, match="even grid_size"):
        MixedVisionEncoder(VisionConfig(encoders=specs, grid_size=5, merge_2x2=True), [build_backend(s) for s in specs], 16)


def test_a_sphinx_front_end_computes_what_sphinx_computes(tmp_path):
    """SPHINX's recipe, against the libraries' own models holding the same weights: the Q-Former reads BLIP-2's EVA
    (a source-only tower); ConvNeXt is the open_clip trunk with its head's pooling and flatten removed (so head.norm
    applies) on the view resized nearest, its map repeated 2× to the common grid, its mean as the cls."""
    import torch.nn.functional as F
    from torch import nn

    blip2 = _tiny_blip2()
    blip2.vision_model.config.image_size = 16  # the tiny EVA: 16 px, patch 8 → cls + 2×2
    blip2.save_pretrained(tmp_path / "blip2")
    torch.manual_seed(4)
    clip = open_clip.create_model(TINY_OPEN_CLIP_MODEL)
    torch.save(clip.state_dict(), tmp_path / "open_clip_pytorch_model.bin")
    specs = [
        EncoderSpec(backend="clip_convnext", arch={"open_clip_model": TINY_OPEN_CLIP_MODEL}, pretrained=str(tmp_path),
                    image_size=64, resize="nearest", grid_resize="nearest", head_norm=True),
        EncoderSpec(backend="blip2_vision", name="eva", pretrained=str(tmp_path / "blip2"), role="source", image_size=16),
        EncoderSpec(backend="qformer", source="eva", pretrained=str(tmp_path / "blip2")),
    ]
    cfg = VisionConfig(encoders=specs, grid_size=4, views_grid=1, resolution=16)
    enc = MixedVisionEncoder(cfg, [build_backend(s, load_weights=True) for s in specs], llm_width=48).eval()
    assert set(enc.encoders) == {"clip_convnext"} and set(enc.sources) == {"eva"}  # EVA is not in the grid projector
    assert enc.projector[0].in_features == enc.encoders["clip_convnext"].width and enc.qformer.source_proj.__class__ is nn.Identity
    px = _pixels(2, 16)
    mean, std = (torch.tensor(m).view(1, 3, 1, 1) for m in (specs[0].mean, specs[0].std))
    normed = (px - mean) / std
    with torch.no_grad():
        trunk = clip.visual.trunk.eval()
        trunk.head.global_pool, trunk.head.flatten = nn.Identity(), nn.Identity()
        fmap = trunk(F.interpolate(normed, size=(64, 64)))  # (B, C, 2, 2), head.norm applied
        fmap = fmap.repeat_interleave(2, dim=2).repeat_interleave(2, dim=3).flatten(2).transpose(1, 2)  # (B, 16, C)
        reference = torch.cat([fmap.mean(1, keepdim=True), fmap], dim=1)
        ours = enc._grid_tokens(enc.encoders["clip_convnext"](px), "nearest")
        torch.testing.assert_close(ours, reference, rtol=1e-5, atol=1e-5)
        queries = blip2.eval().get_qformer_features(pixel_values=normed)  # EVA → Q-Former, the way BLIP-2 runs them
        eva = enc.sources["eva"](px)  # its own cls + 2×2 tokens, not resized to the common grid
        eva_tokens = torch.cat([eva.cls.unsqueeze(1), eva.grid.flatten(2).transpose(1, 2)], dim=1)
        torch.testing.assert_close(enc.qformer(eva_tokens), queries, rtol=1e-5, atol=1e-5)
        tokens = enc(px.unsqueeze(1))  # (2, T, 48): [begin] 6 queries [cls] 16 grid [end]
        torch.testing.assert_close(tokens[:, 1:7], enc.qformer_projector(queries), rtol=1e-5, atol=1e-5)
        assert enc(px.unsqueeze(1)).shape == (2, enc.layout.tokens_per_image, 48)


def test_dinov2_interpolates_position_embeddings_as_dinov2_does():
    """At another resolution than it was trained at (SPHINX: 224 for a 518 model), DINOv2's own code scales the
    position grid by (n + 0.1) / M; transformers' port resizes to n, which samples other points."""
    import torch.nn.functional as F
    from transformers import Dinov2Config, Dinov2Model

    torch.manual_seed(6)
    spec = EncoderSpec(backend="dinov2", arch=dict(hidden_size=16, num_hidden_layers=1, num_attention_heads=2, image_size=32,
                                                   patch_size=8), image_size=48)
    tower = build_backend(spec)
    table = tower.model.embeddings.position_embeddings  # (1, 1 + 16, 16): a 4×4 grid
    grid = table[:, 1:].reshape(1, 4, 4, 16).permute(0, 3, 1, 2)
    expected = F.interpolate(grid, scale_factor=(6.1 / 4, 6.1 / 4), mode="bicubic", antialias=False).permute(0, 2, 3, 1).reshape(1, 36, 16)
    ours = tower.model.embeddings.interpolate_pos_encoding(torch.zeros(1, 37, 16), 48, 48)
    torch.testing.assert_close(ours, torch.cat([table[:, :1], expected], dim=1))
    port = Dinov2Model(Dinov2Config(**spec.arch)).embeddings
    port.load_state_dict(tower.model.embeddings.state_dict())
    assert not torch.allclose(port.interpolate_pos_encoding(torch.zeros(1, 37, 16), 48, 48), ours)
    assert tower(torch.rand(1, 3, 48, 48)).grid.shape == (1, 16, 6, 6)
