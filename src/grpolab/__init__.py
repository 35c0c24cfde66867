"""grpolab: reinforcement learning from verifiable rewards for small language models, CPU first.

The public Python API mirrors the command line:

    from grpolab import Config, train, evaluate_model
    cfg = Config.from_flat(task="arithmetic", digits=2, steps=50)
    result = train(cfg)
"""

from grpolab.config import Config
from grpolab.errors import UserError

__version__ = "0.1.0"
__all__ = ["Config", "UserError", "train", "evaluate_model", "__version__"]


def __getattr__(name: str):
    # Heavy modules (torch, transformers) load only when the training API is used, so that
    # `import grpolab` and the leaf modules stay cheap.
    if name == "train":
        from grpolab.trainer import train

        return train
    if name == "evaluate_model":
        from grpolab.evaluate import evaluate_model

        return evaluate_model
    raise AttributeError(name)
