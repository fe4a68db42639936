"""Put on PYTHONPATH by `gpu_check.sh --quick`: Ray, MLflow and Optuna cannot be imported, as on the
GPU machine the check is for, so the CPU run proves the check needs none of them."""

import sys

BLOCKED = ("ray", "mlflow", "optuna")


class BlockClusterPackages:
    def find_spec(self, name: str, path: object = None, target: object = None) -> None:
        if name.split(".")[0] in BLOCKED:
            raise ModuleNotFoundError(f"{name} is blocked: the GPU check must run without it", name=name)


sys.meta_path.insert(0, BlockClusterPackages())
