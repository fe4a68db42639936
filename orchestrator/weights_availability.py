"""The dry run's word on weights: which arms of a sweep have their prior weights on this machine."""

from trainables.config import TrialConfig
from trainables.initializations.availability import weights_availability


def print_weights_availability(configs: list[TrialConfig]) -> None:
    """One line per distinct pretrained arm: where its weights are, or that they are missing.

    Checked on this machine, the driver's: the sweep ships each file found here to the workers
    through Ray's object store (orchestrator.priors), so worker nodes need neither the files nor
    the internet.
    """
    lines: dict[str, str] = {}
    for config in configs:
        weights_path = config.resolved_weights_path
        status = weights_availability(config.init, config.backbone, config.method, config.weights_dir,
                                      weights_path, config.weights_sha256)
        if status is not None:
            arm = f"{config.init} {config.backbone}"
            if config.init == "ssl-imagenet":
                arm += f" {config.method}"
            lines.setdefault(arm, status)
    if lines:
        print("weights (on this machine; the sweep ships them to the workers through Ray's object store):")
        width = max(map(len, lines))
        for arm, status in lines.items():
            print(f"  {arm:<{width}}  {status}")
