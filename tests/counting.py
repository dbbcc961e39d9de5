"""Counting what a network is asked to do, for tests that check work is not repeated."""


class ForwardCounter:
    """Counts images through a network's forward; optionally raises after ``limit`` images.

    Attributes:
        images: images seen so far.
        shapes: (B, 3, H, W) of every batch.
        training: the network's ``training`` flag at every batch.
        handle: the hook's handle.
    """

    def __init__(self, net, limit: int | None = None):
        self.images = 0
        self.shapes: list[tuple[int, ...]] = []
        self.training: list[bool] = []
        self.limit = limit
        self.handle = net.register_forward_pre_hook(self)

    def __call__(self, module, inputs):
        batch = inputs[0]
        if self.limit is not None and self.images + len(batch) > self.limit:
            raise RuntimeError("simulated crash")
        self.images += len(batch)
        self.shapes.append(tuple(batch.shape))
        self.training.append(module.training)

    def remove(self) -> None:
        """Stop counting."""
        self.handle.remove()
