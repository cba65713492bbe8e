"""config.yaml: the shipped file loads; bad values stop with a message naming the key."""
from __future__ import annotations

import re
import dataclasses
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from cfia import config
from cfia.cli import DEFAULT_CONFIG, config_file, main

ROOT = Path(__file__).resolve().parent.parent


def test_shipped_config_loads_and_resolves_paths_against_its_folder():
    cfg = config.load(DEFAULT_CONFIG)
    assert cfg.listener.ae_title == "CFIA"
    assert cfg.models.classifier.path == str(ROOT / "models" / "classifier.pt")
    assert cfg.spool.folder == str(ROOT / "spool")


def test_without_config_commands_read_and_name_the_shipped_file(tmp_path):
    """`cfia serve` logs the file it read; it said "(defaults)" while reading the shipped one."""
    assert config_file(None) == DEFAULT_CONFIG and DEFAULT_CONFIG.is_file()
    assert config_file(str(tmp_path / "site.yaml")) == tmp_path / "site.yaml"


def test_tls_files_that_are_missing_or_do_not_fit_are_named(tmp_path):
    """Read at start-up: exit 78 (not restarted) naming the key, not a bare FileNotFoundError
    or SSLError from `cfia serve` (exit 1, restarted every 5 s)."""
    import subprocess

    def pair(name):
        cert, key = tmp_path / f"{name}.pem", tmp_path / f"{name}.key"
        subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out",
                        str(cert), "-days", "1", "-subj", "/CN=localhost"], check=True, capture_output=True)
        return str(cert), str(key)

    (cert, key), (_, other_key) = pair("a"), pair("b")
    assert config.from_dict({"listener": {"tls": {"enabled": True, "certificate": cert, "key": key}}})
    cases = [({"certificate": str(tmp_path / "missing.pem"), "key": key}, "listener.tls.certificate: "),
             ({"certificate": cert, "key": other_key}, "cannot be used together"),
             ({"certificate": cert, "key": key, "ca": key}, "listener.tls.ca: ")]
    for tls, message in cases:
        with pytest.raises(config.ConfigError, match=message):
            config.from_dict({"listener": {"tls": {"enabled": True, **tls}}})
    # A key under a passphrase: OpenSSL asked for it on the terminal, then "cannot be used together".
    for kind, extra in (("pkcs8", ["pkey", "-aes256"]), ("legacy", ["rsa", "-aes256", "-traditional"])):
        locked = tmp_path / f"{kind}.key"
        subprocess.run(["openssl", *extra, "-in", key, "-out", str(locked), "-passout", "pass:secret"], check=True,
                       capture_output=True)
        with pytest.raises(config.ConfigError, match=r"listener\.tls\.key: .* is encrypted \(a passphrase\)"):
            config.from_dict({"listener": {"tls": {"enabled": True, "certificate": cert, "key": str(locked)}}})


def test_one_list_of_methods():
    """The config, the CLI, the pipeline and the DICOM objects' algorithm name allow the same methods."""
    from cfia import cli, config, pipeline
    from dicom_out.model import METHODS as IN_THE_OBJECTS

    assert config.METHODS == IN_THE_OBJECTS
    assert pipeline.METHODS is config.METHODS and cli.METHODS is config.METHODS


def test_config_objects_are_frozen():
    cfg = config.from_dict({})
    with pytest.raises(Exception):
        cfg.listener.port = 1  # type: ignore[misc]


@pytest.mark.parametrize("raw, message", [
    ({"listener": {"port": 70000}}, "listener.port: 70000 is out of range; allowed: 0 to 65535"),
    ({"listener": {"port": "x"}}, "listener.port: expected an integer, got 'x'"),
    ({"explainer": {"method": "magic"}}, "explainer.method: 'magic' is not allowed; allowed: cf, blur"),
    ({"listener": {"colour": 1}}, "unknown key listener.colour"),
    ({"bogus": 1}, "unknown key bogus"),
    ({"listener": {"ae_title": "A" * 17}}, "listener.ae_title: 'AAAAAAAAAAAAAAAAA' is not a valid AE title"),
    ({"destinations": [{"host": "h", "port": 0}]}, "destinations[0].port: 0 is out of range"),
    ({"outputs": {"sr": "yes"}}, "outputs.sr: expected true or false, got 'yes'"),
    ({"return_to_sender": {"WS1": {"host": "h", "port": 99999}}}, "return_to_sender.WS1.port: 99999 is out of range"),
    ({"return_to_sender": {"WS1": {"host": "10.0.0.5"}}}, "return_to_sender.WS1: expected a mapping with host and port"),
    ({"listener": {"tls": {"enabled": True}}}, "listener.tls: enabled, so certificate and key are required"),
    ({"models": {"classifier": {"input_size": [256]}}}, "models.classifier.input_size: expected 2 values"),
    ({"workers": {"processor": "no colon"}}, "workers.processor: 'no colon' is not allowed; expected module:function"),
    ({"workers": {"stop_timeout_seconds": -1}}, "workers.stop_timeout_seconds: -1.0 is out of range"),
    ({"workers": {"nice": 20}}, "workers.nice: 20 is out of range; allowed: 0 to 19"),
    ({"models": {"inpainter": {"noise_scale": -0.5}}}, "models.inpainter.noise_scale: -0.5 is out of range; allowed: >= 0.0"),
    ({"models": {"inpainter": {"texture_match": "yes"}}}, "models.inpainter.texture_match: expected true or false"),
    ({"explainer": {"tilings": 2}}, "explainer.tilings: 2 is not allowed; expected an odd number"),
    ({"explainer": {"saliency": "difference"}}, "explainer.saliency: 'difference' is not allowed; allowed: mask, change"),
    ({"explainer": {"saliency_sigma": -1}}, "explainer.saliency_sigma: -1.0 is out of range; allowed: >= 0"),
    ({"explainer": {"change_region_threshold": 1.5}}, "explainer.change_region_threshold: 1.5 is out of range"),
    # The start would be highest where deleting does nothing: the map inverted, exit 0.
    ({"explainer": {"init_floor": 0.95}}, "explainer.init_floor: 0.95 is not allowed; expected a value below "
                                          "explainer.init (0.9)"),
    ({"explainer": {"seed": 2**64}}, "explainer.seed: 18446744073709551616 is out of range"),  # torch.manual_seed's
    # map_quality's area term is log(area): a target was silently ignored.
    ({"explainer": {"objective": "map_quality", "area_mode": "target"}},
     "explainer.area_mode: 'target' is not allowed with explainer.objective map_quality"),
    ({"explainer": {"patience": 0}}, "explainer.patience: 0 is out of range"),
    ({"explainer": {"baseline_score": "probability"}},
     "explainer.baseline_score: 'probability' is not allowed; allowed: logit, log_odds"),
    # An empty host listened on every interface; a port in it failed to resolve at start.
    ({"listener": {"host": ""}}, "listener.host: '' is not allowed; expected a host name or address"),
    ({"http": {"host": " "}}, "http.host: ' ' is not allowed"),
    ({"listener": {"host": "localhost:11112"}}, "listener.host: 'localhost:11112' is not allowed"),
    ({"destinations": [{"host": "pacs.example:104", "port": 104}]}, "destinations[0].host: 'pacs.example:104'"),
    ({"spool": {"send_backoff_seconds": 600}}, "spool.send_backoff_seconds: 600.0 is not allowed; expected at most "
                                               "spool.send_backoff_max_seconds (300.0)"),
    # The second server to bind failed at start with "Address already in use", exit 1.
    ({"http": {"enabled": True, "port": 11112}}, "http.port: 11112 is listener.port too"),
    ({"http": {"enabled": True, "port": 9000, "host": "0.0.0.0"}, "listener": {"port": 9000}},
     "http.port: 9000 is listener.port too"),
])
def test_bad_values_name_the_key_and_what_is_allowed(raw, message):
    with pytest.raises(config.ConfigError) as err:
        config.from_dict(raw)
    assert message in str(err.value)


def test_the_early_stop_and_area_floor_are_set_from_the_config():
    """Issue #4: every hyper-parameter from config.yaml; these three were constructor-only."""
    from cfia.pipeline import Pipeline

    cfg = config.load(DEFAULT_CONFIG)
    cfg = dataclasses.replace(cfg, explainer=dataclasses.replace(cfg.explainer, tolerance=0.01, patience=3,
                                                                 area_min=0.2))
    explainer = Pipeline(cfg).explainer("cf")
    assert (explainer.tolerance, explainer.patience, explainer.area_min) == (0.01, 3, 0.2)


def test_the_region_threshold_is_the_reported_maps():
    """cf and blur reporting the change map cut it at change_region_threshold; a mask
    and the other methods' maps at region_threshold."""
    change = config.from_dict({"explainer": {"region_threshold": 0.4, "change_region_threshold": 0.1}}).explainer
    mask = config.from_dict({"explainer": {"region_threshold": 0.4, "saliency": "mask"}}).explainer
    assert [change.map_region_threshold(m) for m in ("cf", "blur", "gradcam", "ig")] == [0.1, 0.1, 0.4, 0.4]
    assert [mask.map_region_threshold(m) for m in ("cf", "occlusion")] == [0.4, 0.4]


def test_cli_exits_2_without_traceback_on_a_bad_config(tmp_path):
    bad = tmp_path / "config.yaml"
    bad.write_text(yaml.safe_dump({"workers": {"count": 0}}))
    out = subprocess.run([sys.executable, "-m", "cfia.cli", "config", "show", "--config", str(bad)],
                         capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 2
    assert "workers.count: 0 is out of range; allowed: 1 to 64" in out.stderr
    assert "Traceback" not in out.stderr


def test_serve_exits_78_on_a_bad_config_so_systemd_does_not_restart_it(tmp_path):
    """deploy/cfia.service: RestartPreventExitStatus=78."""
    bad = tmp_path / "config.yaml"
    bad.write_text(yaml.safe_dump({"listener": {"colour": 1}}))
    out = subprocess.run([sys.executable, "-m", "cfia.cli", "serve", "--config", str(bad)],
                         capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 78 and "unknown key listener.colour" in out.stderr
    assert "Traceback" not in out.stderr


def test_serve_exits_78_when_a_restart_cannot_help(tmp_path):
    """A spool folder that cannot be created (the shipped relative folder under a read-only
    /etc/cfia) exited 1, which systemd restarts every 5 s for ever; every output off
    explained every image and sent nothing."""
    (tmp_path / "a-file").write_text("")
    from listener import JobQueue

    (tmp_path / "odd-spool").mkdir()
    JobQueue(tmp_path / "odd-spool" / "queue.sqlite").close()
    (tmp_path / "odd-spool" / "queue.sqlite-wal").unlink(missing_ok=True)
    (tmp_path / "odd-spool" / "queue.sqlite-wal").mkdir()  # stands for another user's -wal file
    (tmp_path / "corrupt-spool").mkdir()
    (tmp_path / "corrupt-spool" / "queue.sqlite").write_bytes(bytes(range(256)) * 64)
    (tmp_path / "malformed-spool").mkdir()
    queue = JobQueue(tmp_path / "malformed-spool" / "queue.sqlite")
    for i in range(200):
        queue.add(f"/spool/{i}.dcm", f"1.2.{i}", "1.2", "x", "MOD", "b")
    queue.close()
    data = bytearray((tmp_path / "malformed-spool" / "queue.sqlite").read_bytes())
    data[4096:] = b"\xff" * (len(data) - 4096)  # every page but the first
    (tmp_path / "malformed-spool" / "queue.sqlite").write_bytes(bytes(data))
    cases = [({"spool": {"folder": str(tmp_path / "a-file" / "spool")}}, "cannot create the spool folder"),
             ({"spool": {"folder": str(tmp_path / "odd-spool")}}, "unable to open database file"),
             ({"spool": {"folder": str(tmp_path / "corrupt-spool")}}, "file is not a database"),
             ({"spool": {"folder": str(tmp_path / "malformed-spool")}}, "malformed"),
             ({"outputs": {k: False for k in ("fractional_seg", "binary_seg", "parametric_map", "sr", "gsps")},
               "spool": {"folder": str(tmp_path / "spool")}}, "every output is off")]
    for raw, message in cases:
        path = tmp_path / "config.yaml"
        path.write_text(yaml.safe_dump({**raw, "listener": {"port": 0}}))
        out = subprocess.run([sys.executable, "-m", "cfia.cli", "serve", "--config", str(path)],
                             capture_output=True, text=True, cwd=ROOT, timeout=120)
        assert out.returncode == 78 and message in out.stderr, out.stderr
        assert "Traceback" not in out.stderr


def test_hosts_and_ports_that_can_work_are_taken():
    """IPv6 addresses, every interface and two servers on one port of different addresses."""
    for raw in ({"listener": {"host": "::1"}}, {"listener": {"host": "0.0.0.0"}}, {"listener": {"host": "fe80::1"}},
                {"http": {"enabled": True, "port": 11112, "host": "10.0.0.5"}},
                {"http": {"enabled": False, "port": 11112}}, {"http": {"enabled": True, "port": 0}, "listener": {"port": 0}}):
        config.from_dict(raw)


def test_serve_exits_78_on_a_host_that_does_not_resolve(tmp_path):
    """A listener.host no resolver knows is the config's fault: a restart every 5 s cannot help."""
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump({"listener": {"port": 0, "host": "no-such-host.invalid"},
                                    "spool": {"folder": str(tmp_path / "spool")}}))
    out = subprocess.run([sys.executable, "-m", "cfia.cli", "serve", "--config", str(path)],
                         capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert out.returncode == 78, out.stderr
    assert "Traceback" not in out.stderr


def test_return_to_sender_answers_the_caller_under_its_own_ae_title():
    from cfia.routing import routing_from_config

    routing = routing_from_config(config.from_dict({"return_to_sender": {"WS1": {"host": "10.0.0.5", "port": 11113}}}))
    (ae, dest), = routing.return_to_sender
    assert (ae, dest.ae_title, dest.host, dest.port) == ("WS1", "WS1", "10.0.0.5", 11113)


def test_unreadable_or_invalid_yaml_is_a_config_error(tmp_path):
    with pytest.raises(config.ConfigError, match="cannot read config file"):
        config.load(tmp_path / "missing.yaml")
    (tmp_path / "bad.yaml").write_text("listener:\n  port: [unclosed\n")
    with pytest.raises(config.ConfigError) as err:
        config.load(tmp_path / "bad.yaml")
    assert str(err.value) == (f"config file {tmp_path / 'bad.yaml'} line 3 column 1: expected ',' or ']', "
                              f"but got '<stream end>' (while parsing a flow sequence)")
    (tmp_path / "bad.yaml").write_text("listener:\n  ae_title: CF\x07IA\n")
    with pytest.raises(config.ConfigError, match=r"bad\.yaml line 2 column 15: character #x0007: special characters "
                                                 r"are not allowed$"):
        config.load(tmp_path / "bad.yaml")
    (tmp_path / "bad.yaml").write_bytes("listener:\n  ae_title: CFIA # Zürich\n".encode("latin-1"))
    with pytest.raises(config.ConfigError, match=r"bad\.yaml is not UTF-8 \(byte 30\): save it as UTF-8$"):
        config.load(tmp_path / "bad.yaml")


def test_a_copied_config_names_the_model_files_it_cannot_find(tmp_path, capsys):
    """The install guide copies config.yaml to /etc/cfia: its relative model paths then point
    there. `config show` says so; a file without `models:` uses the shipped models."""
    import shutil

    from cfia import cli

    shutil.copy(ROOT / "config.yaml", tmp_path / "config.yaml")
    assert cli.main(["config", "show", "--config", str(tmp_path / "config.yaml")]) == 2
    err = capsys.readouterr().err
    assert f"models.classifier.path: {tmp_path / 'models' / 'classifier.pt'}" in err
    (tmp_path / "bare.yaml").write_text("listener:\n  port: 11112\n")
    assert cli.main(["config", "show", "--config", str(tmp_path / "bare.yaml")]) == 0
    assert config.load(tmp_path / "bare.yaml").models.classifier.path == str(ROOT / "models" / "classifier.pt")


def test_config_show_prints_the_effective_config(capsys):
    assert main(["config", "show"]) == 0
    shown = yaml.safe_load(capsys.readouterr().out)
    assert shown["listener"]["port"] == 11112 and shown["outputs"]["gsps"] is True


def test_every_subcommand_has_help():
    for args in (["--help"], ["phantom", "--help"], ["config", "show", "--help"], ["serve", "--help"],
                 ["status", "--help"]):
        out = subprocess.run([sys.executable, "-m", "cfia.cli", *args], capture_output=True, text=True, cwd=ROOT)
        assert out.returncode == 0 and "usage: cfia" in out.stdout


def test_processor_factory_is_named_in_config_and_imported_by_name():
    from cfia.processors import DEFAULT_FACTORY, load_factory

    assert config.from_dict({}).workers.processor == DEFAULT_FACTORY
    assert callable(load_factory("cfia.bench.processors:blob"))
    with pytest.raises(ValueError, match="cannot be imported"):
        load_factory("cfia.nothing:here")


def test_status_without_a_queue_is_a_usage_error(tmp_path, capsys):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump({"spool": {"folder": str(tmp_path / "spool")}}))
    assert main(["status", "--config", str(cfg)]) == 2
    assert "no job queue" in capsys.readouterr().err


def test_a_left_out_spool_folder_is_relative_to_the_config_file_not_the_cwd(tmp_path, monkeypatch, capsys):
    """README: relative paths are relative to the config file's folder (under systemd the cwd is /)."""
    site = tmp_path / "etc"
    site.mkdir()
    monkeypatch.chdir(tmp_path)
    (site / "bare.yaml").write_text("listener:\n  port: 11112\n")
    (site / "partial.yaml").write_text("spool:\n  max_retries: 1\n")
    for name in ("bare.yaml", "partial.yaml"):
        assert config.load(site / name).spool.folder == str(site / "spool")
    assert main(["config", "show", "--config", str(site / "bare.yaml")]) == 0
    assert yaml.safe_load(capsys.readouterr().out)["spool"]["folder"] == str(site / "spool")


@pytest.mark.parametrize("size", [[-5, 100], [0, 0], [512, 7]])
def test_classifier_input_size_values_are_at_least_8(size):
    bad = next(i for i, v in enumerate(size) if v < 8)
    with pytest.raises(config.ConfigError,
                       match=rf"models\.classifier\.input_size\[{bad}\]: {size[bad]} is out of range; allowed: >= 8"):
        config.from_dict({"models": {"classifier": {"input_size": size}}})
    assert config.from_dict({"models": {"classifier": {"input_size": [8, 8]}}}).models.classifier.input_size == (8, 8)


def test_classifier_defaults_are_the_shipped_config_yamls():
    """A site file without `models:` or with some classifier keys gets config.yaml's model
    (README's table), not another one; the path left out follows the kind."""
    import inspect

    from explain.networks import MammoNet

    shipped = config.load(DEFAULT_CONFIG).models.classifier
    for raw in ({}, {"models": {"classifier": {"input_size": [512, 352]}}}):
        got = config.from_dict(raw, ROOT).models.classifier
        assert got == dataclasses.replace(shipped, network_args={})
    defaults = {k: v.default for k, v in inspect.signature(MammoNet).parameters.items()}
    assert {k: defaults[k] for k in shipped.network_args} == {k: tuple(v) if isinstance(v, list) else v
                                                               for k, v in shipped.network_args.items()}
    ts = config.from_dict({"models": {"classifier": {"kind": "torchscript"}}}).models.classifier
    assert ts.path == str(ROOT / "models" / "classifier.ts")
    own = config.from_dict({"models": {"classifier": {"kind": "torchscript", "path": "my.ts"}}}, ROOT).models.classifier
    assert (own.kind, own.path) == ("torchscript", str(ROOT / "my.ts"))
    with pytest.raises(config.ConfigError, match="models.classifier.path: none given; a path to the bundle folder "
                                                 "is required when kind is monai_bundle"):
        config.from_dict({"models": {"classifier": {"kind": "monai_bundle"}}})


@pytest.mark.parametrize("dests, bad", [
    ([{"name": "x", "ae_title": "X"}], 0),
    ([{"host": "h", "port": 104}, {"ae_title": "X", "host": "h"}], 1),
    ([{"ae_title": "X", "port": 104}], 0),
])
def test_every_destination_names_its_host_and_port(dests, bad):
    """Like return_to_sender: a default host and port would send results elsewhere."""
    with pytest.raises(config.ConfigError, match=rf"^destinations\[{bad}\]: expected a mapping with host and port"):
        config.from_dict({"destinations": dests})


def test_duplicate_yaml_keys_are_errors_naming_the_key_and_its_line(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("explainer:\n  max_passes: 5\nexplainer:\n  seed: 1\n")
    with pytest.raises(config.ConfigError) as err:
        config.load(path)
    assert str(err.value) == f"config file {path} line 3 column 1: duplicate key 'explainer' (first on line 1)"
    path.write_text("explainer:\n  max_passes: 5\n  seed: 1\n  max_passes: 6\n")
    with pytest.raises(config.ConfigError, match="line 4 column 3: duplicate key 'max_passes' "):
        config.load(path)
    # A key overriding one merged in by `<<` is not a duplicate.
    assert yaml.load("a: &d {port: 1}\nb:\n  <<: *d\n  port: 2\n", Loader=config._UniqueKeyLoader)["b"] == {"port": 2}


def test_a_float_written_without_a_dot_is_a_number(tmp_path):
    """PyYAML (YAML 1.1) reads 1e-3 as a string; float keys take it, int keys stay strict."""
    path = tmp_path / "c.yaml"
    path.write_text("explainer:\n  learning_rate: 1e-3\n  lr_half_life: 2E+1\n")
    e = config.load(path).explainer
    assert (e.learning_rate, e.lr_half_life) == (0.001, 20.0)
    for raw, message in (({"learning_rate": "fast"}, "explainer.learning_rate: expected a finite number, got 'fast'"),
                         ({"learning_rate": float("nan")}, "explainer.learning_rate: expected a finite number, got nan"),
                         ({"learning_rate": float("inf")}, "explainer.learning_rate: expected a finite number"),
                         ({"max_passes": "5"}, "explainer.max_passes: expected an integer, got '5'")):
        with pytest.raises(config.ConfigError, match=message.replace(".", r"\.")):
            config.from_dict({"explainer": raw})


@pytest.mark.parametrize("title", ["A" * 28, "", "  ", "BACK\\SLASH"])
def test_allowed_calling_ae_titles_are_each_a_valid_ae_title(title):
    with pytest.raises(config.ConfigError,
                       match=r"listener\.allowed_calling_ae_titles\[1\]: .* is not a valid AE title; allowed: 1-16"):
        config.from_dict({"listener": {"allowed_calling_ae_titles": ["WS1", title]}})
    assert config.from_dict({"listener": {"allowed_calling_ae_titles": ["WS1", "A" * 16]}}).listener \
        .allowed_calling_ae_titles == ("WS1", "A" * 16)


def test_intensity_handling_reaches_the_classifier_and_is_checked(tmp_path):
    """A user's RGB network trained on ImageNet-normalised input: config.yaml says so, the
    node's classifier adapts cfia's image to it; settings that cannot fit stop at load."""
    import torch

    from cfia.pipeline import Pipeline

    class Rgb(torch.nn.Module):
        def forward(self, x):
            assert x.shape[1] == 3
            return x.mean(dim=(2, 3))[:, :2]

    torch.jit.script(Rgb()).save(str(tmp_path / "rgb.ts"))
    mean, std = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]
    cfg = config.from_dict({"models": {"classifier": {"kind": "torchscript", "path": str(tmp_path / "rgb.ts"),
                                               "input_size": [64, 48], "channels": 3, "mean": mean, "std": std},
                                "inpainter": {"kind": "telea"}}, "explainer": {"method": "occlusion"}})
    clf = Pipeline(cfg).classifier
    x = torch.rand(1, 1, 64, 48)
    expected = (x.mean() - torch.tensor(mean[:2])) / torch.tensor(std[:2])
    torch.testing.assert_close(clf(x)[0], expected)
    for bad, match in (({"channels": 3, "mean": [0.1, 0.2]}, "models.classifier.mean"),
                       ({"input_range": [1, 0]}, "models.classifier.input_range"),
                       ({"std": [0]}, r"models.classifier.std\[0\]")):
        with pytest.raises(config.ConfigError, match=match):
            config.from_dict({"models": {"classifier": bad}})


def test_version_names_the_installed_release(capsys):
    """operations.md's upgrade notes refer to versions: the installer must be able to read it."""
    from cfia import cli

    with pytest.raises(SystemExit) as exit_:
        cli.main(["--version"])
    assert exit_.value.code == 0
    assert re.fullmatch(r"cfia \d+\.\d+\.\d+\n", capsys.readouterr().out)
