"""Token constants every part of the project shares: the image placeholder and the ignored label."""

IMAGE_TOKEN = "<image>"  # one per image in the text; the processor expands it to the model's visual-token count
IGNORE_INDEX = -100  # label of tokens that carry no loss (transformers' and PyTorch's cross-entropy default)
