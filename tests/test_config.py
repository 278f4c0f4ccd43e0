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

from lightning.pytorch.loggers import CSVLogger

import torch

from lightning_kge.module import KGEModule
from lightning_kge.configs import build_trainer, config_dir

CONF = config_dir()
GROUPS = sorted(p.name for p in CONF.iterdir() if p.is_dir())


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


def compose_with(*overrides: str):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        default_dir = [] if any(o.startswith("output_dir=") for o in overrides) else ["output_dir=/tmp/unused"]
        cfg = compose(config_name="config", overrides=[*overrides, *default_dir])
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
    [(g, o) for g in GROUPS for o in options(g) if g not in ("experiment", "strategy", "hparams_search")],
)
def test_every_option_names_only_arguments_of_its_target(group: str, option: str) -> None:
    overrides = [f"{group}={option}"]
    if group == "data" and option == "tsv":
        overrides.append("data.path=/nowhere")
    node = OmegaConf.to_container(compose_with(*overrides)[group], resolve=True)
    if group == "callbacks":  # named entries, each one class
        for name, entry in node.items():
            assert_only_arguments(entry, f"conf/{group}/{option}.yaml: {name}")
        return
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


def test_trainer_config_lists_every_trainer_argument_but_the_logger_and_callbacks_groups() -> None:
    node = compose_with().trainer
    expected = {n for n in inspect.signature(L.Trainer.__init__).parameters if n != "self"}
    assert declared_keys(node) == expected - {"logger", "callbacks"}


def test_module_config_names_only_module_arguments() -> None:
    node = OmegaConf.to_container(compose_with().module)
    assert declared_keys(node) <= target_parameters(node)


@pytest.mark.parametrize("option", options("model"))
def test_every_model_option_instantiates(option: str) -> None:
    cfg = compose_with(f"model={option}")
    model = instantiate(cfg.model, num_entities=7, num_relations=3)
    assert model.num_entities == 7


@pytest.mark.parametrize("option", options("sampler"))
def test_every_sampler_option_gives_the_datamodule_and_the_module_its_yaml_values(option: str) -> None:
    node = compose_with(f"sampler={option}").sampler
    sampler = instantiate(node)
    corruption, selection = sampler.corruption(), sampler.selection()
    # The datamodule draws k negatives, or the candidates the module chooses k from (a pool, a cache's refresh).
    drawn = node.get("pool_size", node.get("candidates", node.num_negatives))
    assert (corruption.num_negatives, corruption.side, corruption.filtered, corruption.shared) == (
        drawn, node.side, node.filtered, node.shared
    )
    assert selection.temperature == node.temperature
    if drawn != node.num_negatives:
        assert selection.num_negatives == node.num_negatives


def test_optimizer_option_is_a_factory_the_module_calls_with_its_parameters() -> None:
    factory = instantiate(compose_with().optimizer)
    assert isinstance(factory, functools.partial)
    optimizer = factory([torch.nn.Parameter(torch.zeros(2))])
    assert isinstance(optimizer, torch.optim.Adam) and optimizer.defaults["lr"] == compose_with().optimizer.lr


def test_a_trainer_argument_given_on_the_command_line_reaches_the_trainer(tmp_path: Path) -> None:
    trainer = build_trainer(compose_with("trainer.limit_test_batches=0", "trainer.max_steps=5", "trainer=cpu",
                                         f"output_dir={tmp_path}"))
    assert trainer.limit_test_batches == 0 and trainer.max_steps == 5


def test_the_logger_and_every_named_callback_reach_the_trainer_and_a_null_entry_drops_one(tmp_path: Path) -> None:
    trainer = build_trainer(compose_with("trainer=cpu", f"output_dir={tmp_path}"))
    kinds = {type(c).__name__ for c in trainer.callbacks}
    assert {"Checkpoints", "DivergenceGuard", "TestReport", "RegionAUCPR"} <= kinds
    assert isinstance(trainer.logger, CSVLogger) and Path(trainer.logger.log_dir) == tmp_path / "csv"
    trainer = build_trainer(compose_with("trainer=cpu", "callbacks.auc_pr=null", f"output_dir={tmp_path}"))
    assert "RegionAUCPR" not in {type(c).__name__ for c in trainer.callbacks}


def own_options() -> list[tuple[str, str]]:
    """Options whose yaml is read as written: one of our classes, not extending a base option."""
    found = []
    for group in GROUPS:
        for option in options(group):
            raw = OmegaConf.load(CONF / group / f"{option}.yaml")
            if "defaults" not in raw and group not in ("experiment", "strategy", "trainer", "logger", "optimizer"):
                found.append((group, option))
    return found


def nodes_of(group: str, raw) -> list:
    """The nodes of our own classes in an option (a callbacks option holds several entries)."""
    nodes = list(raw.values()) if group == "callbacks" else [raw]
    return [node for node in nodes if node["_target_"].startswith("lightning_kge.")]


@pytest.mark.parametrize(("group", "option"), own_options())
def test_every_yaml_value_equals_its_class_default_or_the_class_has_none(group: str, option: str) -> None:
    raw = OmegaConf.load(CONF / group / f"{option}.yaml")
    for node in nodes_of(group, raw):
        module, _, name = node["_target_"].rpartition(".")
        parameters = inspect.signature(getattr(importlib.import_module(module), name).__init__).parameters
        for key in declared_keys(node):
            default = parameters[key].default
            if default is inspect.Parameter.empty or OmegaConf.is_interpolation(node, key):
                continue
            value = OmegaConf.to_container(node)[key]
            assert value == (list(default) if isinstance(default, tuple) else default), (
                f"conf/{group}/{option}.yaml: {key} is {value!r}, the class default is {default!r}"
            )


def test_module_node_values_equal_the_module_defaults() -> None:
    raw = OmegaConf.load(CONF / "config.yaml").module
    parameters = inspect.signature(KGEModule.__init__).parameters
    for key in declared_keys(raw):
        default = parameters[key].default
        assert OmegaConf.to_container(raw)[key] == (list(default) if isinstance(default, tuple) else default), key


def test_data_presets_extend_the_base_option_that_mirrors_the_datamodule() -> None:
    for option in options("data"):
        if option != "base":
            assert list(OmegaConf.load(CONF / "data" / f"{option}.yaml").defaults) == ["base"], option


def test_config_dir_is_found_from_the_package() -> None:
    assert (config_dir() / "config.yaml").is_file()
    assert Path(config_dir()).name == "conf"
