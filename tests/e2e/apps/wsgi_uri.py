"""A WSGI app for uWSGI: answers with what a WSGI framework sees of the request URL."""
from wsgiref.util import request_uri


def application(environ, start_response):
    lines = [
        "URI=%s" % request_uri(environ, include_query=True),
        "SCRIPT_NAME=%s" % environ.get("SCRIPT_NAME", ""),
        "PATH_INFO=%s" % environ.get("PATH_INFO", ""),
        "REQUEST_METHOD=%s" % environ.get("REQUEST_METHOD"),
    ]
    body = ("\n".join(lines) + "\n").encode("latin-1")
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
