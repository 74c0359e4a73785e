"""Hello: a plain WSGI application (PEP 3333), no framework, no SDK.

`app` serves every path app.yaml sends to `script: auto`; `admin` serves
/admin/ (app.yaml's `script: main.admin`, `login: admin`).
"""
import html
import os

PAGE = """<!doctype html>
<html><head><title>Hello from Cyclozzo</title>
<link rel="stylesheet" href="/static/style.css"></head>
<body><img src="/images/cyclozzo.svg" alt="" width="48" height="48">
<h1>Hello, {who}!</h1>
<p>App <code>{app}</code>, version <code>{version}</code>, path <code>{path}</code>.</p>
</body></html>
"""


def app(environ, start_response):
    path = environ.get('PATH_INFO', '/')
    if path == '/healthz':
        start_response('200 OK', [('Content-Type', 'text/plain')])
        return [b'ok\n']
    if path not in ('/', '/index.html'):
        start_response('404 Not Found', [('Content-Type', 'text/plain')])
        return [b'not found\n']
    who = environ.get('HTTP_X_APPENGINE_USER_EMAIL') or 'world'
    body = PAGE.format(who=html.escape(who),
                       app=html.escape(os.environ.get('GAE_APPLICATION', '?')),
                       version=html.escape(os.environ.get('GAE_VERSION', '?')),
                       path=html.escape(path)).encode('utf-8')
    start_response('200 OK', [('Content-Type', 'text/html; charset=utf-8')])
    return [body]


def admin(environ, start_response):
    who = environ.get('HTTP_X_APPENGINE_USER_EMAIL', '')
    start_response('200 OK', [('Content-Type', 'text/plain; charset=utf-8')])
    return [('admin area, signed in as %s\n' % who).encode('utf-8')]
