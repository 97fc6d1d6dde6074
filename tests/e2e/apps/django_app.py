"""A one-file Django project, served by uWSGI over SCGI behind moongate.

/start/            answers 200 with X-Location: the URL of `target`, built by Django's
                   own reverse() (so it carries the SCRIPT_NAME prefix Django was given)
/target/<name>/    answers with what Django sees of the redirected request
"""
import django
from django.conf import settings
from django.http import HttpResponse
from django.urls import path, reverse

settings.configure(
    DEBUG=False,
    ALLOWED_HOSTS=["*"],
    ROOT_URLCONF=__name__,
    SECRET_KEY="test-only",
    MIDDLEWARE=[],
    INSTALLED_APPS=[],
    # After an internal redirect the gateway sends REDIRECT_URL, as Apache does; Django reads
    # it as mod_rewrite's and would derive a wrong script prefix from it. Mounted at a fixed
    # prefix, Django is told the prefix, as its deployment docs advise behind rewrites.
    FORCE_SCRIPT_NAME="/django",
)
django.setup()


def start(request):
    resp = HttpResponse("the gateway discards this body")
    resp["X-Location"] = reverse("target", args=["from-start"]) + "?via=django"
    return resp


def target(request, name):
    meta = request.META
    lines = [
        "name=%s" % name,
        "path=%s" % request.path,
        "method=%s" % request.method,
        "query=%s" % request.GET.urlencode(),
        "SCRIPT_NAME=%s" % meta.get("SCRIPT_NAME", ""),
        "PATH_INFO=%s" % meta.get("PATH_INFO", ""),
        "REQUEST_URI=%s" % meta.get("REQUEST_URI", ""),
        "REDIRECT_URL=%s" % meta.get("REDIRECT_URL", ""),
        "REDIRECT_REQUEST_METHOD=%s" % meta.get("REDIRECT_REQUEST_METHOD", ""),
        "REDIRECT_STATUS=%s" % meta.get("REDIRECT_STATUS", ""),
        "CONTENT_LENGTH=%s" % meta.get("CONTENT_LENGTH", ""),
    ]
    return HttpResponse("\n".join(lines) + "\n", content_type="text/plain")


urlpatterns = [
    path("start/", start),
    path("target/<str:name>/", target, name="target"),
]

from django.core.wsgi import get_wsgi_application  # noqa: E402

application = get_wsgi_application()
