"""Config loading, overrides and their errors (jaxrun/config.py)."""

import math

import pytest

from jaxrun.config import CONFIG_DIR, ConfigError, from_dict, load_config, to_dict

RECORD = CONFIG_DIR / "record60.py"


def test_record60_holds_the_spec_numbers():
    cfg = load_config(RECORD)
    m, o, s, d = cfg.model, cfg.optim, cfg.schedule, cfg.data
    assert (m.vocab_size, m.num_layers, m.model_dim, m.num_heads, m.head_dim, m.mlp_hidden) == (50304, 11, 768, 6, 128, 3072)
    assert m.attention_layers == (0, 1, 2, 3, 4, 5, 7, 8, 9, 10)
    assert math.isclose(m.init_attn_bound, 1 / 16) and math.isclose(m.init_fc_bound, 1 / 32)
    assert m.rms_eps == pytest.approx(1.1920929e-07)
    assert (o.muon_lr, o.adam_lr, o.adam_eps, o.muon_weight_decay, o.adam_weight_decay) == (0.023, 0.008, 1e-10, 1.2, 0.005)
    assert o.adam_group("ve").lr_mul == 75 and o.adam_group("lm_head").wd_mul == 150
    assert s.total_steps == 1775
    assert [n * s.seq_len for n in s.seqs_per_rank] == [16384, 32768, 49152]
    assert d.val_tokens == 5 * 8 * d.val_seq_len


def test_default_config_is_tiny():
    assert load_config().name == "tiny"


def test_override_parses_types():
    cfg = load_config(RECORD, ["schedule.lr_floor=0.2", "run.val_every=100", "model.fp8_head=false", "run.name=abc",
                               "schedule.seqs_per_rank=(1, 2, 3)"])
    assert cfg.schedule.lr_floor == 0.2 and isinstance(cfg.schedule.lr_floor, float)
    assert cfg.run.val_every == 100
    assert cfg.model.fp8_head is False
    assert cfg.run.name == "abc"
    assert cfg.schedule.seqs_per_rank == (1, 2, 3)


def test_unknown_key_names_nearest():
    with pytest.raises(ConfigError, match=r"unknown config key 'model.num_layer'.*model\.num_layers"):
        load_config(RECORD, ["model.num_layer=3"])
    with pytest.raises(ConfigError, match="unknown config key 'optimm.adam_lr'.*optim.adam_lr"):
        load_config(RECORD, ["optimm.adam_lr=1"])


def test_bad_override_values():
    with pytest.raises(ConfigError, match="expected an integer"):
        load_config(RECORD, ["run.val_every=often"])
    with pytest.raises(ConfigError, match="key=value"):
        load_config(RECORD, ["run.val_every"])
    with pytest.raises(ConfigError, match="must equal model.model_dim"):
        load_config(RECORD, ["model.num_heads=5"])


def test_missing_config_file(tmp_path):
    with pytest.raises(ConfigError, match="not found.*record60.py"):
        load_config(tmp_path / "nope.py")
    bad = tmp_path / "bad.py"
    bad.write_text("x = 1\n")
    with pytest.raises(ConfigError, match="get_config"):
        load_config(bad)


def test_dict_round_trip():
    cfg = load_config(RECORD)
    assert from_dict(to_dict(cfg)) == cfg


def test_a_config_json_with_the_removed_cu_seqlens_fields_still_loads():
    """A run directory's config.json from before the cu_seqlens fields went (so --resume and compare still read it)."""
    cfg = load_config(RECORD)
    old = to_dict(cfg)
    old["data"].update(cu_seqlens_multiple=128, cu_seqlens_tokens_per_doc=300)  # as configs/record60.py had them
    assert from_dict(old) == cfg
    old["data"]["cu_seqlens_length"] = 128  # only those two are dropped: any other unknown key is still refused
    with pytest.raises(TypeError, match="cu_seqlens_length"):
        from_dict(old)


def test_a_config_json_from_before_the_head_loss_op_resumes_with_the_two_ops_it_ran():
    """Four backends in an old config.json: the head and the CE ran as two ops, which is head_loss's xla backend."""
    cfg = load_config(RECORD)
    old = to_dict(cfg)
    old["model"]["backends"] = [[op, "triton"] for op in ("attention", "lm_head", "mlp", "cross_entropy")]
    assert from_dict(old).model.backends == (("attention", "triton"), ("lm_head", "triton"), ("mlp", "triton"),
                                              ("cross_entropy", "triton"), ("head_loss", "xla"))


@pytest.mark.parametrize("override, message", [
    ("schedule.scheduled_steps=0", "schedule.scheduled_steps = 0: every value must be >= 1"),
    ("schedule.scheduled_steps=-5", "schedule.scheduled_steps = -5: every value must be >= 1"),
    ("schedule.seqs_per_rank=(0, 1, 2)", "schedule.seqs_per_rank = (0, 1, 2): every value must be >= 1"),
    ("schedule.seqs_per_rank=(-1, 1, 2)", "schedule.seqs_per_rank = (-1, 1, 2)"),
    ("schedule.seq_len=0", "schedule.seq_len = 0"),
    ("run.val_every=0", "run.val_every = 0: every value must be >= 1"),
    ("run.log_every=0", "run.log_every = 0"),
    ("run.keep_checkpoints=0", "run.keep_checkpoints = 0"),
    ("schedule.lr_floor=1.5", "schedule.lr_floor = 1.5: every value must be >= 0 and <= 1"),
    ("optim.adam_lr=0.0", "optim.adam_lr = 0.0: every value must be > 0"),
    ("model.fp8_scales=(0.2, -1.0, 0.1)", "model.fp8_scales"),
])
def test_numeric_fields_are_checked_at_load_time(override, message):
    with pytest.raises(ConfigError) as err:
        load_config(None, [override])
    assert message in str(err.value)


def test_every_shipped_config_passes_the_range_checks():
    for path in sorted(CONFIG_DIR.glob("*.py")):
        load_config(path)
