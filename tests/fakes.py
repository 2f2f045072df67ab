"""Stand-ins shared by the hook tests."""


class DummyTrainer:
    """Stands in for a Trainer: records what hooks log."""

    def __init__(self, collected_frames: int = 0) -> None:
        self.logged: list[dict] = []
        self.collected_frames = collected_frames

    def _log(self, **kwargs) -> None:
        self.logged.append(kwargs)
