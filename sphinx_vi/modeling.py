"""`SphinxViForConditionalGeneration`: mixed vision encoder + any causal LM, merged by `masked_scatter`.

    pixel_values (N, V, 3, R, R) ──► MixedVisionEncoder ──► (N, V·T, D) ─┐ masked_scatter where
    input_ids (B, L) with N·V·T `<image>` ids ──► embed ──► (B, L, D) ───┴► input_ids == <image>
                                                                             │
                                                        language model ◄────┘ ──► logits (B, L, vocab)

The processor expands each `<image>` into exactly `config.layout.tokens_per_image` ids; the model
never re-pads and checks that the counts match. `generate` encodes the images once.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from transformers import AutoModelForCausalLM, GenerationMixin, PreTrainedModel
from transformers.modeling_outputs import CausalLMOutputWithPast

from .configuration import SphinxViConfig
from .decoding import lean_greedy, lean_greedy_applies
from .label_loss import cross_entropy_sum
from .text.tokens import IGNORE_INDEX
from .vision.mixed import MixedVisionEncoder, build_backend


class ImageTokenMismatchError(ValueError):
    """The number of `<image>` placeholders differs from the number of visual tokens."""


def build_vision(config: SphinxViConfig) -> MixedVisionEncoder:
    """The mixed encoder of `config`, towers at random init (weights come from a checkpoint or the factory)."""
    backends = [build_backend(spec) for spec in config.vision_config.encoders]
    return MixedVisionEncoder(config.vision_config, backends, llm_width=config.text_config.hidden_size)


class SphinxViPreTrainedModel(PreTrainedModel):
    config_class = SphinxViConfig
    config: SphinxViConfig
    base_model_prefix = ""
    main_input_name = "input_ids"
    supports_gradient_checkpointing = True
    _supports_sdpa = True
    _skip_keys_device_placement = ["cache"]

    def _init_weights(self, module: nn.Module) -> None:
        # Only our own layers: the towers and the LLM initialise (or load) themselves.
        if isinstance(module, MixedVisionEncoder):
            module.reset_parameters()


class SphinxViForConditionalGeneration(SphinxViPreTrainedModel, GenerationMixin):
    def __init__(
        self,
        config: SphinxViConfig,
        vision: MixedVisionEncoder | None = None,
        language_model: PreTrainedModel | None = None,
    ) -> None:
        super().__init__(config)
        self.vision = vision if vision is not None else build_vision(config)
        self.language_model = language_model if language_model is not None else AutoModelForCausalLM.from_config(config.text_config)
        self.post_init()
        # `<image>` must never be generated: it has no features to fill it on the next step.
        self.generation_config.suppress_tokens = [config.image_token_id]

    # --- embeddings plumbing (so resize_token_embeddings, peft and generate work) ---------------
    def get_input_embeddings(self) -> nn.Module:
        return self.language_model.get_input_embeddings()

    def set_input_embeddings(self, value: nn.Module) -> None:
        self.language_model.set_input_embeddings(value)

    def get_output_embeddings(self) -> nn.Module:
        return self.language_model.get_output_embeddings()

    def set_output_embeddings(self, value: nn.Module) -> None:
        self.language_model.set_output_embeddings(value)

    # --- the multimodal merge ---------------------------------------------------------------
    def encode_images(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """(N, V, 3, R, R) → (N, V·T, D) visual tokens in the LLM's dtype."""
        return self.vision(pixel_values.to(self.vision.dtype))

    def embed_inputs(
        self,
        input_ids: torch.Tensor,
        pixel_values: torch.Tensor | None = None,
        image_features: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """(B, L) ids (+ images) → (B, L, D) embeddings with the visual tokens scattered in."""
        embeds = self.get_input_embeddings()(input_ids)  # (B, L, D)
        mask = input_ids == self.config.image_token_id  # (B, L)
        n_placeholders = int(mask.sum())
        if pixel_values is None and image_features is None:
            if n_placeholders:
                raise ImageTokenMismatchError(
                    f"input_ids hold {n_placeholders} <image> tokens but no pixel_values were given"
                )
            return embeds
        if image_features is None:
            assert pixel_values is not None
            image_features = self.encode_images(pixel_values)  # (N, V·T, D)
        n_images, per_image = image_features.shape[:2]
        if n_placeholders != n_images * per_image:
            raise ImageTokenMismatchError(
                f"input_ids hold {n_placeholders} <image> tokens but {n_images} image(s) give "
                f"{n_images * per_image} visual tokens ({per_image} per image); build inputs with "
                f"SphinxViProcessor, which expands each <image> into {per_image} tokens"
            )
        return embeds.masked_scatter(mask.unsqueeze(-1), image_features.to(embeds.dtype))

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        pixel_values: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        cache: Any = None,
        inputs_embeds: torch.Tensor | None = None,
        labels: torch.LongTensor | None = None,
        use_cache: bool | None = None,
        logits_to_keep: int | torch.Tensor = 0,
        skip_logits: bool | None = None,
        **kwargs: Any,
    ):
        """Causal-LM forward; returns the language model's output (loss when `labels` are given).

        With `labels` and `skip_logits` (default: while training) the vocabulary projection runs
        only on positions that have a label and `logits` is None: the loss is the same, the
        (B, L, vocab) logits are never built. Packed rows (several samples per row) need
        `position_ids` restarting at 0 per sample and no `attention_mask`: the attention is then
        block-diagonal (transformers' packed-sequence masks).
        """
        if inputs_embeds is None:
            if input_ids is None:
                raise ValueError("pass input_ids (with pixel_values for images) or inputs_embeds")
            inputs_embeds = self.embed_inputs(input_ids, pixel_values)
        elif pixel_values is not None:
            raise ValueError("pass pixel_values with input_ids, not with inputs_embeds (already merged)")
        if attention_mask is not None and attention_mask.ndim == 2 and bool(attention_mask.all()):
            attention_mask = None  # no padding: causal attention needs no mask (SDPA's fast path)
        if labels is not None and (self.training if skip_logits is None else skip_logits):
            hidden = self.language_model.get_decoder()(
                inputs_embeds=inputs_embeds, attention_mask=attention_mask, position_ids=position_ids, use_cache=False, **kwargs
            ).last_hidden_state  # (B, L, D)
            loss_sum, count = self.label_loss_sum(hidden, labels)
            return CausalLMOutputWithPast(loss=loss_sum / max(count, 1), logits=None)
        return self.language_model(
            inputs_embeds=inputs_embeds,
            attention_mask=attention_mask,
            position_ids=position_ids,
            cache=cache,
            labels=labels,
            use_cache=use_cache,
            logits_to_keep=logits_to_keep,
            **kwargs,
        )

    def label_loss_sum(self, hidden: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, int]:
        """(B, L, D) final hidden states, (B, L) labels → (sum of next-token cross-entropy, label count).

        Only the positions followed by a label go through the vocabulary projection, in chunks of
        bounded size (`sphinx_vi.label_loss`): the (B, L, vocab) logits never exist.
        """
        targets = labels[:, 1:]  # (B, L-1): position t predicts token t+1
        keep = targets != IGNORE_INDEX
        head = self.get_output_embeddings()
        return cross_entropy_sum(head, hidden[:, :-1][keep], targets[keep]), int(keep.sum())  # (n, D) rows

    @torch.no_grad()
    def generate(
        self,
        input_ids: torch.LongTensor | None = None,
        pixel_values: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        **kwargs: Any,
    ):
        """`GenerationMixin.generate` with the images encoded once, before the first step.

        The merged prompt embeddings go in as `inputs_embeds` (beam search expands them per
        sample); later steps feed only new token ids against the KV cache. Plain greedy
        decoding (the API's default) runs the lean loop of `sphinx_vi.decoding` — same ids,
        less per-step overhead; every other option goes through `transformers`.
        """
        if pixel_values is not None:
            if input_ids is None:
                raise ValueError("generate with pixel_values needs input_ids holding the <image> tokens")
            kwargs["inputs_embeds"] = self.embed_inputs(input_ids, pixel_values)
        elif input_ids is not None:
            # A `cache` (a later chat turn) may already hold the image: only the
            # ids it does not cover are embedded, and those must not be placeholders.
            cache = kwargs.get("cache")
            cached = cache.get_seq_length() if cache is not None else 0
            if bool((input_ids[:, cached:] == self.config.image_token_id).any()):
                raise ImageTokenMismatchError("input_ids hold <image> tokens but no pixel_values were given")
        if input_ids is not None and lean_greedy_applies(kwargs, self.generation_config):
            return lean_greedy(self, input_ids, attention_mask, self.generation_config, **kwargs)
        return super().generate(input_ids=input_ids, attention_mask=attention_mask, **kwargs)
