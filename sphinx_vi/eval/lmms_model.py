"""sphinx_vi as an lmms-eval model: `generate_until` through the project's one decoding path (`Generator`).

    lmms-eval --model sphinx_vi --model_args pretrained=DIR,batch_size=8 --tasks sphinx_vi_rec \
        --include_path TASKS --output_path out/

Requests are answered in the order lmms-eval gives them, `batch_size` at a time, greedily unless the
task asks for sampling; the box grammar constrains boxes as in `python -m sphinx_vi.eval`
(`constrain_boxes=False` to switch it off). A context without an `<image>` placeholder (most
lmms-eval tasks) gets one per image in front, as the API does for a plain prompt.
"""

from __future__ import annotations

from typing import Any

from lmms_eval.api.instance import Instance
from lmms_eval.api.model import lmms
from tqdm import tqdm

from ..factory import load_model
from ..generation import Generator
from ..text.tokens import IMAGE_TOKEN


class UnsupportedRequestError(NotImplementedError):
    """lmms-eval asked for a request type this adapter does not serve."""


def _flag(value: Any) -> bool:
    return value if isinstance(value, bool) else str(value).lower() in ("1", "true", "yes")


class SphinxViLmms(lmms):
    is_simple = True

    def __init__(self, pretrained: str = "tiny-shapes", device: str = "cpu", batch_size: int | str = 1,
                 constrain_boxes: bool | str = True, dtype: str | None = None, **kwargs: Any) -> None:
        super().__init__()
        unknown = sorted(k for k in kwargs if k not in ("max_batch_size",))  # lmms-eval passes max_batch_size itself
        if unknown:
            raise ValueError(f"sphinx_vi: unknown model_args {', '.join(unknown)} "
                             "(known: pretrained, device, batch_size, constrain_boxes, dtype)")
        self.gen = Generator(*load_model(str(pretrained), device=device, dtype=dtype))  # type: ignore[arg-type]
        self.gen.model.eval()
        self.batch_size_per_gpu = int(batch_size)
        self.constrain_boxes = _flag(constrain_boxes)

    def _conversation(self, context: str, n_images: int) -> list[dict[str, str]]:
        if IMAGE_TOKEN not in context:
            context = "\n".join([IMAGE_TOKEN] * n_images + [context])
        return [{"role": "user", "content": context}]

    def _options(self, gen_kwargs: dict[str, Any]) -> dict[str, Any]:
        temperature = float(gen_kwargs.get("temperature", 0) or 0)
        options: dict[str, Any] = {"max_new_tokens": int(gen_kwargs.get("max_new_tokens", 128)),
                                   "do_sample": _flag(gen_kwargs.get("do_sample", False)) or temperature > 0,
                                   "constrain_boxes": self.constrain_boxes}
        if options["do_sample"]:
            options["temperature"] = temperature or 1.0
            if gen_kwargs.get("top_p") is not None:
                options["top_p"] = float(gen_kwargs["top_p"])
        return options

    def generate_until(self, requests: list[Instance]) -> list[str]:
        """One answer per request; each cut at the task's `until` strings."""
        answers: list[str] = []
        bar = tqdm(total=len(requests), desc="sphinx_vi", disable=self.rank != 0)
        for i in range(0, len(requests), self.batch_size_per_gpu):
            chunk = [r.args for r in requests[i : i + self.batch_size_per_gpu]]
            gen_kwargs = dict(chunk[0][1])
            until = gen_kwargs.pop("until", None) or []
            until = [s for s in ([until] if isinstance(until, str) else until) if s]
            images, conversations = [], []
            for context, _, doc_to_visual, doc_id, task, split in chunk:
                visuals = [v.convert("RGB") for v in doc_to_visual(self.task_dict[task][split][doc_id])]
                images += visuals
                conversations.append(self._conversation(context, len(visuals)))
            texts = self.gen.generate(images, conversations, **self._options(gen_kwargs))
            for text in texts:
                for stop in until:
                    text = text.split(stop, 1)[0]
                answers.append(text.strip())
            bar.update(len(chunk))
        bar.close()
        return answers

    def loglikelihood(self, requests: list[Instance]) -> list[tuple[float, bool]]:
        raise UnsupportedRequestError("sphinx_vi serves generate_until tasks only (no loglikelihood tasks)")

    def generate_until_multi_round(self, requests: list[Instance]) -> list[str]:
        raise UnsupportedRequestError("sphinx_vi serves single-round generate_until tasks only")
