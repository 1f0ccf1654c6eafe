"""A config field of the wrong type and a save over a weight file that cannot be replaced get errors that name what
is wrong and what to do (issue 29): before, a TypeError from a comparison and a SafetensorError naming no file."""

import json
import shutil
import subprocess

import pytest
from huggingface_hub.errors import StrictDataclassFieldValidationError

from glm_hf import GLMConfig
from glm_hf.cli import main
from tests.helpers.tiny import tiny_config, tiny_model


@pytest.mark.parametrize(
    ("field", "value", "expected"),
    [
        ("hidden_size", "64", "expected int, got str"),
        ("hidden_size", 64.0, "expected int, got float"),
        ("num_hidden_layers", True, "expected int, got bool"),
        ("use_glu", 1, "expected bool, got int"),
        ("attention_scale", "2", "expected float, got str"),
        ("mask_token_id", "4", "expected int, got str"),
        ("verbalizer_ids", [[11.5]], "Invalid item at index 0"),
    ],
)
def test_a_config_field_of_the_wrong_type_is_named_with_its_value(field, value, expected):
    with pytest.raises(StrictDataclassFieldValidationError, match=f"(?s)field '{field}'.*{expected}") as error:
        tiny_config(**{field: value})
    assert repr(value) in str(error.value)
    config = tiny_config()
    with pytest.raises(StrictDataclassFieldValidationError, match=f"field '{field}'"):
        setattr(config, field, value)


def test_ints_still_load_into_float_fields_and_round_trip(tmp_path):
    """JSON written by hand or by THUDM's configs holds `0` or `10000` where GLMConfig declares a float."""
    config = tiny_config(rope_theta=10000, hidden_dropout=0, attention_scale=1, post_ln_alpha=2)
    config.save_pretrained(tmp_path)
    loaded = GLMConfig.from_pretrained(tmp_path)
    assert (loaded.rope_theta, loaded.hidden_dropout, loaded.post_ln_alpha) == (10000, 0, 2)
    assert GLMConfig.from_dict(config.to_dict()).to_dict() == config.to_dict()


def test_a_saved_config_of_the_wrong_type_is_one_clear_command_line_error(tmp_path):
    tiny_model().save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps({**saved, "hidden_size": "32"}))
    with pytest.raises(SystemExit) as exit_info:
        main(["card", str(tmp_path)])
    message = str(exit_info.value)
    assert "field 'hidden_size'" in message and "expected int, got str (value: '32')" in message
    assert "unexpected" not in message


def test_a_directory_where_the_weights_go_is_named(tmp_path):
    """Fails for root too (unlike a read-only file)."""
    (tmp_path / "model.safetensors").mkdir()
    with pytest.raises(OSError, match=f"{tmp_path / 'model.safetensors'} is a directory.*remove or rename"):
        tiny_model().save_pretrained(tmp_path)


def test_an_immutable_weight_file_is_named_and_kept(tmp_path):
    """`chattr +i` stops root too; the old weights stay as they were."""
    model = tiny_model()
    model.save_pretrained(tmp_path)
    weights = tmp_path / "model.safetensors"
    before = weights.read_bytes()
    if shutil.which("chattr") is None or subprocess.run(["chattr", "+i", weights]).returncode != 0:
        pytest.skip("chattr +i is unavailable here (no chattr, or the file system or privileges refuse it)")
    try:
        with pytest.raises(OSError, match=f"{weights} cannot be replaced.*chmod u\\+w; chattr -i"):
            tiny_model(seed=1).save_pretrained(tmp_path)
    finally:
        subprocess.run(["chattr", "-i", weights], check=True)
    assert weights.read_bytes() == before
