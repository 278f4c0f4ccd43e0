"""Train, test and ask a model with Lightning's own CLI (``KGECLI``, a ``LightningCLI``):

    python cli.py fit --config config.yaml
    python cli.py test --config config.yaml --ckpt_path <run>/checkpoints/last.ckpt
    python cli.py predict --config config.yaml --ckpt_path <run>/checkpoints/last.ckpt

No entity or relation counts in the config: KGECLI links them from the data, with the graph's labels,
and one ``sampler`` gives the datamodule its corruption and the module its selection.
"""

from lightning_kge import KGECLI

if __name__ == "__main__":
    KGECLI()
