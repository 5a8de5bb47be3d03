from click.testing import CliRunner

from otpnn.cli import main


def test_verify_real_files(mnist_dir):
    result = CliRunner().invoke(main, ["data", "verify", str(mnist_dir)])
    assert result.exit_code == 0, result.output
    assert result.output.count("ok  ") == 4


def test_verify_missing_dir_is_one_clear_error_exit_2(tmp_path):
    result = CliRunner().invoke(main, ["data", "verify", str(tmp_path)])
    assert result.exit_code == 2
    assert result.output.startswith(f"Error: {tmp_path}: missing train-images-idx3-ubyte")
    assert "Traceback" not in result.output


def test_verify_without_dir_searches_env_then_cache(monkeypatch, mnist_dir):
    monkeypatch.setenv("OTPNN_DATA_DIR", str(mnist_dir))
    result = CliRunner().invoke(main, ["data", "verify"])
    assert result.exit_code == 0, result.output
    assert str(mnist_dir) in result.output


def test_fetch_from_local_mirror_then_offline_error(tmp_path, serve, mnist_dir):
    runner = CliRunner()
    target = tmp_path / "mnist"
    ok = runner.invoke(main, ["data", "fetch", str(target), "--mirror", serve(mnist_dir)])
    assert ok.exit_code == 0, ok.output
    assert f"MNIST ready in {target}" in ok.output
    offline = runner.invoke(main, ["data", "fetch", "--mirror", "http://127.0.0.1:9/"])
    assert offline.exit_code == 2
    assert "could not download train-images-idx3-ubyte.gz" in offline.output
    assert "Put the four MNIST files" in offline.output
