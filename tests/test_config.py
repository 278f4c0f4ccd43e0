"""Every config option composes, instantiates, and has only keys its class accepts."""

from __future__ import annotations

import functools
import importlib
import inspect
from pathlib import Path

import lightning as L
from lightning.pytorch.strategies import StrategyRegistry
import pytest
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from omegaconf import OmegaConf

from lightning_kge.train import config_dir

CONF = config_dir()
GROUPS = sorted(p.name for p in CONF.iterdir() if p.is_dir())


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


def compose_with(*overrides: str):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(config_name="config", overrides=[*overrides, "output_dir=/tmp/unused"])
    return cfg


def target_parameters(node) -> set[str]:
    module, _, name = node["_target_"].rpartition(".")
    target = getattr(importlib.import_module(module), name)
    function = target.__init__ if inspect.isclass(target) else target
    return {n for n in inspect.signature(function).parameters if n != "self"}


def declared_keys(node) -> set[str]:
    return {k for k in node if not k.startswith("_")}


def assert_only_arguments(node: dict, where: str) -> None:
    assert "_target_" in node, f"{where} has no _target_"
    unknown = declared_keys(node) - target_parameters(node)
    assert not unknown, f"{where} keys {unknown} are not arguments of {node['_target_']}"


def assert_lightning_strategy(strategy: str | dict, where: str) -> None:
    """A strategy is a name Lightning registers (or ``auto``), or a ``_target_`` node."""
    if isinstance(strategy, str):
        assert strategy == "auto" or strategy in StrategyRegistry, f"{where}: unknown strategy {strategy!r}"
    else:
        assert_only_arguments(strategy, where)


@pytest.mark.parametrize(
    ("group", "option"),
    [(g, o) for g in GROUPS for o in options(g) if g not in ("experiment", "strategy")],
)
def test_every_option_names_only_arguments_of_its_target(group: str, option: str) -> None:
    overrides = [f"{group}={option}"]
    if group == "data" and option == "tsv":
        overrides.append("data.path=/nowhere")
    node = OmegaConf.to_container(compose_with(*overrides)[group], resolve=True)
    assert_only_arguments(node, f"conf/{group}/{option}.yaml")
    if group == "trainer":
        assert_lightning_strategy(node["strategy"], f"conf/trainer/{option}.yaml")


@pytest.mark.parametrize("trainer", options("trainer"))
@pytest.mark.parametrize("option", options("strategy"))
def test_every_strategy_option_names_one_lightning_strategy_for_every_trainer(option: str, trainer: str) -> None:
    """``strategy=X`` replaces ``trainer.strategy`` whatever the trainer option says."""
    cfg = compose_with(f"strategy={option}", f"trainer={trainer}")
    strategy = OmegaConf.to_container(cfg.trainer)["strategy"]
    expected = OmegaConf.to_container(OmegaConf.load(CONF / "strategy" / f"{option}.yaml"))["strategy"]
    assert strategy == expected
    assert_lightning_strategy(strategy, f"conf/strategy/{option}.yaml")


def test_trainer_config_lists_every_trainer_argument() -> None:
    node = compose_with().trainer
    expected = {n for n in inspect.signature(L.Trainer.__init__).parameters if n != "self"}
    assert declared_keys(node) == expected


def test_module_config_names_only_module_arguments() -> None:
    node = OmegaConf.to_container(compose_with().module)
    assert declared_keys(node) <= target_parameters(node)


@pytest.mark.parametrize("option", options("model"))
def test_every_model_option_instantiates(option: str) -> None:
    cfg = compose_with(f"model={option}")
    model = instantiate(cfg.model, num_entities=7, num_relations=3)
    assert model.num_entities == 7


@pytest.mark.parametrize("option", options("sampler") + options("optimizer"))
def test_every_sampler_and_optimizer_option_instantiates(option: str) -> None:
    group = "sampler" if option in options("sampler") else "optimizer"
    obj = instantiate(compose_with(f"{group}={option}")[group])
    assert obj is not None
    if group == "optimizer":
        assert isinstance(obj, functools.partial)


def test_any_trainer_argument_can_be_overridden() -> None:
    cfg = compose_with("trainer.limit_test_batches=0", "trainer.max_steps=5")
    assert cfg.trainer.limit_test_batches == 0 and cfg.trainer.max_steps == 5


def test_config_dir_is_found_from_the_package() -> None:
    assert (config_dir() / "config.yaml").is_file()
    assert Path(config_dir()).name == "conf"
