"""Stand-ins shared by the hook tests."""


class DummyTrainer:
    """Stands in for a Trainer where a hook reads only its frame count and its (absent) logger."""

    logger = None

    def __init__(self, collected_frames: int = 0) -> None:
        self.collected_frames = collected_frames
