"""Tiny random models built from the libraries' own classes, saved and loaded like real weights.

They exist so that tests and CPU benchmarks run the real loading and inference code of
Segment Anything and diffusers without downloading anything.
"""

from __future__ import annotations

import json
from functools import partial
from pathlib import Path

import torch


def build_tiny_sam(checkpoint: str | None = None):
    """A Segment Anything model of a few hundred KB built from the library's own classes.

    Registered beside vit_h/vit_l/vit_b so that tests load it through the same path as real weights.
    """
    from segment_anything.modeling import ImageEncoderViT, MaskDecoder, PromptEncoder, Sam, TwoWayTransformer

    dim, size = 32, 256
    sam = Sam(
        image_encoder=ImageEncoderViT(img_size=size, patch_size=16, embed_dim=dim, depth=1, num_heads=2, out_chans=dim,
                                      norm_layer=partial(torch.nn.LayerNorm, eps=1e-6), use_rel_pos=True, window_size=0),
        prompt_encoder=PromptEncoder(embed_dim=dim, image_embedding_size=(size // 16, size // 16), input_image_size=(size, size), mask_in_chans=4),
        mask_decoder=MaskDecoder(num_multimask_outputs=3, transformer=TwoWayTransformer(depth=1, embedding_dim=dim, mlp_dim=64, num_heads=2),
                                 transformer_dim=dim, iou_head_depth=1, iou_head_hidden_dim=16),
        pixel_mean=[123.675, 116.28, 103.53],
        pixel_std=[58.395, 57.12, 57.375],
    )
    sam.eval()
    if checkpoint is not None:
        sam.load_state_dict(torch.load(checkpoint, map_location="cpu", weights_only=True))
    return sam


def save_tiny_inpaint_pipeline(directory: Path) -> Path:
    """A random Stable Diffusion inpainting pipeline of a few hundred KB, saved like real weights (model_index.json)."""
    from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionInpaintPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    torch.manual_seed(0)
    letters = "abcdefghijklmnopqrstuvwxyz"
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for c in letters:
        vocab[c] = len(vocab)
        vocab[c + "</w>"] = len(vocab)
    tok_dir = directory / "tok_src"
    tok_dir.mkdir(parents=True)
    (tok_dir / "vocab.json").write_text(json.dumps(vocab))
    (tok_dir / "merges.txt").write_text("#version: 0.2\n")
    tokenizer = CLIPTokenizer(str(tok_dir / "vocab.json"), str(tok_dir / "merges.txt"), model_max_length=16)
    text = CLIPTextModel(CLIPTextConfig(vocab_size=len(vocab), hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                        num_attention_heads=2, max_position_embeddings=16, bos_token_id=0, eos_token_id=1, pad_token_id=1))
    unet = UNet2DConditionModel(sample_size=8, in_channels=9, out_channels=4, layers_per_block=1, block_out_channels=(8, 16),
                                down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"), up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
                                cross_attention_dim=16, attention_head_dim=2, norm_num_groups=4)
    vae = AutoencoderKL(in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
                        up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"), block_out_channels=(8, 8), latent_channels=4, norm_num_groups=4)
    pipe = StableDiffusionInpaintPipeline(vae=vae, text_encoder=text, tokenizer=tokenizer, unet=unet,
                                          scheduler=DDIMScheduler(clip_sample=False, steps_offset=1), safety_checker=None,
                                          feature_extractor=None, requires_safety_checker=False)
    pipe.save_pretrained(directory / "sd")  # type: ignore[attr-defined]  # DiffusionPipeline.save_pretrained
    return directory / "sd"


def save_tiny_kosmos2(directory: Path) -> Path:
    """A random Kosmos-2 of a few hundred KB (transformers' own classes) with its processor, saved in transformers' layout.

    The tokenizer is an XLM-R tokenizer (transformers 5: the fast one) over a tiny Unigram vocabulary trained here; the processor adds
    Kosmos-2's tag and 1024 patch-index tokens to it, as the released processor does.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import CLIPImageProcessor, Kosmos2Config, Kosmos2ForConditionalGeneration, Kosmos2Processor, XLMRobertaTokenizer

    tok = Tokenizer(models.Unigram())
    tok.pre_tokenizer, tok.decoder = pre_tokenizers.Metaspace(), decoders.Metaspace()
    specials = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]
    tok.train_from_iterator(["an image of a cat on the mat", "a snowman by a fire", "con mèo trên thảm", "hình tròn màu đỏ"] * 20,
                            trainers.UnigramTrainer(vocab_size=120, special_tokens=specials, unk_token="<unk>"))
    tokenizer = XLMRobertaTokenizer(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>",
                                        unk_token="<unk>", mask_token="<mask>")
    processor = Kosmos2Processor(CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}), tokenizer)
    torch.manual_seed(0)
    config = Kosmos2Config(
        text_config={"vocab_size": len(processor.tokenizer), "embed_dim": 32, "layers": 1, "attention_heads": 2, "ffn_dim": 64,
                     "max_position_embeddings": 256},
        vision_config={"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1, "num_attention_heads": 2,
                       "image_size": 32, "patch_size": 16},
        latent_query_num=64)  # the processor's number of image tokens
    Kosmos2ForConditionalGeneration(config).eval().save_pretrained(directory)
    processor.save_pretrained(directory)
    return Path(directory)


def _byte_level_bpe(texts: list[str], vocab_size: int, specials: list[str], unk: str | None = None):
    """A byte-level BPE `tokenizers.Tokenizer` trained here on `texts` (the kind BART and Qwen2 tokenizers wrap)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE(unk_token=unk))
    tok.pre_tokenizer, tok.decoder = pre_tokenizers.ByteLevel(add_prefix_space=False), decoders.ByteLevel()
    tok.train_from_iterator(texts * 20, trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=specials,
                                                            initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    return tok


def save_tiny_florence2(directory: Path) -> Path:
    """A random Florence-2 of a few hundred KB (transformers' own classes) with its processor, saved in transformers' layout.

    The tokenizer is a BART tokenizer over a tiny byte-level BPE trained here, with Florence-2's image token and
    its 1000 `<loc_k>` tokens; the image processor's sequence length is the tiny DaViT's 65 tokens (64×64 input).
    """
    from transformers import BartTokenizer, CLIPImageProcessor, Florence2Config, Florence2ForConditionalGeneration, Florence2Processor

    tok = _byte_level_bpe(["Locate the phrases in the caption: a cat", "Locate the objects with category name in the image."], 300,
                          ["<s>", "<pad>", "</s>", "<unk>", "<mask>"], unk="<unk>")
    tokenizer = BartTokenizer(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>", unk_token="<unk>",
                              mask_token="<mask>", extra_special_tokens={"image_token": "<image>"})
    tokenizer.add_tokens([f"<loc_{i}>" for i in range(1000)])
    images = CLIPImageProcessor(size={"height": 64, "width": 64}, crop_size={"height": 64, "width": 64}, do_center_crop=False)
    images.image_seq_length = 65  # type: ignore[attr-defined]  # 8×8 patches after strides 4 and 2, plus one
    processor = Florence2Processor(images, tokenizer)
    vision = {"depths": [1, 1], "patch_size": [7, 3], "patch_stride": [4, 2], "patch_padding": [3, 1], "patch_prenorm": [False, True],
              "embed_dim": [16, 32], "num_heads": [2, 2], "num_groups": [2, 2], "window_size": 4, "projection_dim": 32,
              "max_temporal_embeddings": 4, "max_position_embeddings": 16}
    text = {"model_type": "bart", "vocab_size": len(tokenizer), "d_model": 32, "encoder_layers": 1, "decoder_layers": 1,
            "encoder_attention_heads": 2, "decoder_attention_heads": 2, "encoder_ffn_dim": 64, "decoder_ffn_dim": 64,
            "max_position_embeddings": 256, "pad_token_id": tokenizer.pad_token_id, "bos_token_id": tokenizer.bos_token_id,
            "eos_token_id": tokenizer.eos_token_id, "decoder_start_token_id": tokenizer.eos_token_id}
    torch.manual_seed(0)
    config = Florence2Config(vision_config=vision, text_config=text, image_token_id=tokenizer.image_token_id)
    Florence2ForConditionalGeneration(config).eval().save_pretrained(directory)
    processor.save_pretrained(directory)
    return Path(directory)


def save_tiny_qwen2_5_vl(directory: Path) -> Path:
    """A random Qwen2.5-VL of a few hundred KB (transformers' own classes) with its processor, saved in transformers' layout.

    The tokenizer is a Qwen2 tokenizer over a tiny byte-level BPE trained here, with Qwen's chat and vision tokens and a
    minimal chat template (an image, then the text, per user turn); the image processor keeps inputs small (≤ 64 patches).
    """
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration, Qwen2_5_VLProcessor, Qwen2Tokenizer, Qwen2VLImageProcessor
    from transformers.models.qwen2_vl.video_processing_qwen2_vl import Qwen2VLVideoProcessor

    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>", "<|image_pad|>", "<|video_pad|>"]
    tok = _byte_level_bpe(['Locate every "cat" in the image and output the bounding boxes in JSON format',
                           '[{"bbox_2d": [1, 2, 3, 4], "label": "cat"}]', "user assistant"], 400, specials)
    tokenizer = Qwen2Tokenizer(tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>", unk_token="<|endoftext|>",
                               bos_token=None)
    template = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{% for c in m['content'] %}{% if c['type'] == 'image' %}"
                "<|vision_start|><|image_pad|><|vision_end|>{% else %}{{ c['text'] }}{% endif %}{% endfor %}<|im_end|>\n{% endfor %}"
                "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
    images = Qwen2VLImageProcessor(min_pixels=56 * 56, max_pixels=28 * 28 * 64, patch_size=14, merge_size=2, temporal_patch_size=2)
    processor = Qwen2_5_VLProcessor(image_processor=images, tokenizer=tokenizer, video_processor=Qwen2VLVideoProcessor(),
                                    chat_template=template)
    ids = {t: int(tokenizer.convert_tokens_to_ids(t)) for t in specials}  # type: ignore[arg-type]  # one token in: one id out
    torch.manual_seed(0)
    config = Qwen2_5_VLConfig(
        text_config={"vocab_size": len(tokenizer), "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1,
                     "num_attention_heads": 2, "num_key_value_heads": 1, "max_position_embeddings": 1024,
                     "rope_parameters": {"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [2, 3, 3]},
                     "bos_token_id": None, "eos_token_id": ids["<|im_end|>"], "pad_token_id": ids["<|endoftext|>"]},
        vision_config={"depth": 1, "hidden_size": 32, "intermediate_size": 64, "num_heads": 2, "out_hidden_size": 32, "patch_size": 14,
                       "spatial_merge_size": 2, "temporal_patch_size": 2, "window_size": 56, "fullatt_block_indexes": [0]},
        image_token_id=ids["<|image_pad|>"], video_token_id=ids["<|video_pad|>"], vision_start_token_id=ids["<|vision_start|>"],
        vision_end_token_id=ids["<|vision_end|>"])
    Qwen2_5_VLForConditionalGeneration(config).eval().save_pretrained(directory)
    processor.save_pretrained(directory)
    return Path(directory)


def save_tiny_internvl(directory: Path) -> Path:
    """A random InternVL (transformers' `internvl`, the InternVL3 port) of a few hundred KB with its processor, saved in
    transformers' layout.

    The tokenizer is a Qwen2 tokenizer over a tiny byte-level BPE trained here, with InternVL's image tokens (named as
    its processor reads them), its `<ref>`/`<box>` tags and a minimal chat template (`<IMG_CONTEXT>` marks the image);
    one 28×28 tile of 4 image tokens.
    """
    from transformers import GotOcr2ImageProcessor, InternVLConfig, InternVLForConditionalGeneration, InternVLProcessor, Qwen2Tokenizer
    from transformers.models.internvl.video_processing_internvl import InternVLVideoProcessor

    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<img>", "</img>", "<IMG_CONTEXT>", "<video>", "<ref>", "</ref>",
                "<box>", "</box>"]
    tok = _byte_level_bpe(["Please provide the bounding box coordinate of the region this sentence describes: <ref>cat</ref>",
                           "<ref>cat</ref><box>[[10, 20, 300, 400]]</box>", "user assistant"], 400, specials)
    tokenizer = Qwen2Tokenizer(tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>", unk_token="<|endoftext|>",
                               bos_token=None, extra_special_tokens={"start_image_token": "<img>", "end_image_token": "</img>",
                                                                     "context_image_token": "<IMG_CONTEXT>", "video_token": "<video>"})
    template = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{% for c in m['content'] %}{% if c['type'] == 'image' %}"
                "<IMG_CONTEXT>\n{% else %}{{ c['text'] }}{% endif %}{% endfor %}<|im_end|>\n{% endfor %}"
                "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
    images = GotOcr2ImageProcessor(size={"height": 28, "width": 28}, crop_to_patches=False, max_patches=1)
    processor = InternVLProcessor(image_processor=images, tokenizer=tokenizer, video_processor=InternVLVideoProcessor(),
                                  image_seq_length=4, chat_template=template)
    ids = {t: int(tokenizer.convert_tokens_to_ids(t)) for t in specials}  # type: ignore[arg-type]  # one token in: one id out
    torch.manual_seed(0)
    config = InternVLConfig(
        vision_config={"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1, "num_attention_heads": 2,
                       "image_size": [28, 28], "patch_size": [7, 7]},
        text_config={"model_type": "qwen2", "vocab_size": len(tokenizer), "hidden_size": 32, "intermediate_size": 64,
                     "num_hidden_layers": 1, "num_attention_heads": 2, "num_key_value_heads": 1, "max_position_embeddings": 1024,
                     "bos_token_id": None, "eos_token_id": ids["<|im_end|>"], "pad_token_id": ids["<|endoftext|>"]},
        image_token_id=ids["<IMG_CONTEXT>"], downsample_ratio=0.5)  # (28/7)² = 16 patches → 4 tokens
    InternVLForConditionalGeneration(config).eval().save_pretrained(directory)
    processor.save_pretrained(directory)
    return Path(directory)
