"""moongate in front of SCGI servers this project did not write: uWSGI (WSGI apps, Django)
and Perl's SCGI.pm, all from Debian's packages."""
import os
import shutil
import subprocess

import pytest

from conftest import Process, free_port, request, wait_port

APPS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "apps")
UWSGI = shutil.which("uwsgi")


def start_uwsgi(module_file, port):
    assert UWSGI, "uwsgi is not installed: run `make deps` (packages uwsgi-core, uwsgi-plugin-python3)"
    return Process([UWSGI, "--plugin", "python3", "--scgi-socket", "127.0.0.1:%d" % port, "--wsgi-file", module_file,
                    "--chdir", APPS, "--pythonpath", APPS, "--processes", "1", "--disable-logging", "--die-on-term"], port)


def uwsgi_app(module):
    """A fixture running tests/e2e/apps/<module> under uWSGI's SCGI socket."""
    @pytest.fixture
    def fixture():
        port = free_port()
        p = start_uwsgi(os.path.join(APPS, module), port)
        yield port
        p.stop()
    return fixture


uwsgi_uri_app = uwsgi_app("wsgi_uri.py")
uwsgi_django = uwsgi_app("django_app.py")


def fields(body):
    return dict(line.split("=", 1) for line in body.decode("latin-1").splitlines() if "=" in line)


@pytest.mark.parametrize("path", [
    "/pi/plain/path",
    "/pi/a%20b/c",
    "/pi/caf%C3%A9/%E6%97%A5%E6%9C%AC",
    "/pi/x%2By/a+b=c",
    "/pi/",
    "/pi/q?x=1&y=%20",
])
def test_wsgi_request_uri_round_trips_with_pathinfo(gateway, uwsgi_uri_app, path):
    g = gateway('mg.route("/pi/", "scgi://127.0.0.1:{BACKEND}/", { pathinfo = true })\n', uwsgi_uri_app)
    r = request(g.port, path=path)
    assert r.status == 200
    f = fields(r.body)
    assert f["SCRIPT_NAME"] == "/pi"
    expected = path.replace("+", "%2B")  # wsgiref quotes '+' itself; PATH_INFO holds the '+'
    assert f["URI"] == "http://127.0.0.1:%d%s" % (g.port, expected)


def test_wsgi_default_script_name_is_whole_path(gateway, uwsgi_uri_app):
    g = gateway('mg.route("/", "scgi://127.0.0.1:{BACKEND}/")\n', uwsgi_uri_app)
    f = fields(request(g.port, path="/a%20b/c").body)
    assert f["SCRIPT_NAME"] == "/a b/c" and f["PATH_INFO"] == ""


def test_wsgi_post_and_keepalive(gateway, uwsgi_uri_app):
    g = gateway('mg.route("/", "scgi://127.0.0.1:{BACKEND}/")\n', uwsgi_uri_app)
    r = request(g.port, method="POST", path="/form", body=b"a=1" * 1000)
    assert r.status == 200 and fields(r.body)["REQUEST_METHOD"] == "POST"


def test_django_x_location_internal_redirect(gateway, uwsgi_django):
    """Django builds the redirect URL with reverse(); moongate follows it internally."""
    g = gateway('mg.route("/django/", "scgi://127.0.0.1:{BACKEND}/", { pathinfo = true, internal_redirect = "X-Location" })\n',
                uwsgi_django)
    r = request(g.port, method="POST", path="/django/start/?orig=1", body=b"payload",
                headers=[("Content-Type", "application/x-www-form-urlencoded")])
    assert r.status == 200, r.body
    assert r.header("X-Location") is None
    f = fields(r.body)
    assert f["name"] == "from-start"
    assert f["path"] == "/django/target/from-start/"
    assert f["SCRIPT_NAME"] == "/django" and f["PATH_INFO"] == "/target/from-start/"
    assert f["method"] == "GET" and f["query"] == "via=django"
    assert f["REQUEST_URI"] == "/django/start/?orig=1"
    assert f["REDIRECT_URL"] == "/django/start/"
    assert f["REDIRECT_REQUEST_METHOD"] == "POST" and f["REDIRECT_STATUS"] == "200"
    assert f["CONTENT_LENGTH"] in ("0", "")


def test_django_without_redirect_passes_header(gateway, uwsgi_django):
    g = gateway('mg.route("/django/", "scgi://127.0.0.1:{BACKEND}/", { pathinfo = true, internal_redirect = false })\n',
                uwsgi_django)
    r = request(g.port, path="/django/start/")
    assert r.status == 200 and r.header("X-Location") == "/django/target/from-start/?via=django"


def test_perl_scgi_server(gateway):
    port = free_port()
    p = Process(["perl", os.path.join(APPS, "perl_scgi.pl"), str(port)], port)
    try:
        g = gateway('mg.route("/", "scgi://127.0.0.1:%d/")\n' % port)
        r = request(g.port, method="POST", path="/perl/x?a=b", body=b"hi", headers=[("X-Test", "1")])
        assert r.status == 200
        f = fields(r.body)
        assert f["SCRIPT_NAME"] == "/perl/x" and f["QUERY_STRING"] == "a=b"
        assert f["HTTP_X_TEST"] == "1" and f["CONTENT_LENGTH"] == "2" and f["SCGI"] == "1"
        assert r.body.endswith(b"BODY=hi")
    finally:
        p.stop()
