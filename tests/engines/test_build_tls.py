"""An image built over verified TLS (docs/engines.rst: images, over a TLS engine): builds go
over our own client, with the same SSL context as every other call, whatever the environment
says."""
from backend import docker as _docker
from backend.model._config import parse_instances
from test_tls import _instance, tls_engine  # noqa: F401 - the fixture


def test_an_image_is_built_over_verified_tls(tls_engine, tmp_path, monkeypatch):
    engine, folder = tls_engine
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", "/etc/ssl/certs/ca-certificates.crt")
    image = tmp_path / "image"
    image.mkdir()
    (image / "Dockerfile").write_text("FROM scratch\nLABEL built=over-tls\n")
    [config] = parse_instances([_instance(engine, folder)])
    assert _docker.build_image(config, str(image), "tls-built") is None
    with _docker.connect(config) as remote:
        assert remote.image_exists("tls-built")
    [wrong] = parse_instances([_instance(engine, folder, ca="other-ca.pem")])
    error = _docker.build_image(wrong, str(image), "tls-refused")
    assert error is not None and ("TLS" in error or "SSL" in error)
