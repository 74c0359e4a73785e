"""Guestbook: visitors sign a guestbook; signed-in visitors are named.

The classic App Engine sample, written against Google's App Engine SDK for
Python 3 (appengine-python-standard) and plain WSGI:

  * greetings are ndb entities whose parent is the guestbook's key, so one
    guestbook is one entity group and its query is an ancestor query;
  * users gives the sign-in / sign-out links and the author's nickname;
  * memcache holds the rendered greeting list for a minute, and is cleared
    when somebody signs.

GET /?guestbook_name=NAME shows a guestbook; POST /sign adds a greeting.
"""
import html
import logging
import urllib.parse

from google.appengine.api import memcache
from google.appengine.api import users
from google.appengine.api import wrap_wsgi_app
from google.appengine.ext import ndb

DEFAULT_GUESTBOOK = 'default_guestbook'
SHOWN = 10


def guestbook_key(name):
    """All greetings of one guestbook share this ancestor."""
    return ndb.Key('Guestbook', name or DEFAULT_GUESTBOOK)


class Greeting(ndb.Model):
    author = ndb.UserProperty()
    content = ndb.StringProperty(indexed=False)
    date = ndb.DateTimeProperty(auto_now_add=True)


def cache_key(name):
    return 'greetings:' + (name or DEFAULT_GUESTBOOK)


def render_greetings(name):
    """The greeting list as HTML, from memcache when it is there."""
    key = cache_key(name)
    cached = memcache.get(key)
    if cached is not None:
        return cached
    greetings = (Greeting.query(ancestor=guestbook_key(name))
                 .order(-Greeting.date).fetch(SHOWN))
    parts = []
    for g in greetings:
        who = html.escape(g.author.nickname()) if g.author else 'An anonymous person'
        parts.append('<p class="who"><b>%s</b> wrote:</p><blockquote>%s</blockquote>'
                     % (who, html.escape(g.content or '')))
    text = '\n'.join(parts) or '<p>No greetings yet.</p>'
    if not memcache.add(key, text, time=60):
        logging.warning('memcache add failed for %s', key)
    return text


PAGE = """<!doctype html>
<html><head><title>Guestbook</title>
<link rel="stylesheet" href="/static/guestbook.css"></head>
<body>
<p>{account}</p>
<h1>Guestbook <i>{name}</i></h1>
{greetings}
<form action="/sign?{query}" method="post">
  <textarea name="content" rows="3" cols="60"></textarea>
  <p><input type="submit" value="Sign Guestbook"></p>
</form>
<form action="/" method="get">
  Guestbook name: <input name="guestbook_name" value="{name}">
  <input type="submit" value="switch">
</form>
</body></html>
"""


def main_page(environ, start_response):
    params = urllib.parse.parse_qs(environ.get('QUERY_STRING', ''))
    name = params.get('guestbook_name', [DEFAULT_GUESTBOOK])[0]
    here = environ.get('PATH_INFO', '/') + ('?' + environ['QUERY_STRING']
                                            if environ.get('QUERY_STRING') else '')
    user = users.get_current_user()
    if user:
        account = 'Hello, %s. <a href="%s">Sign out</a>' % (
            html.escape(user.nickname()), html.escape(users.create_logout_url(here)))
    else:
        account = '<a href="%s">Sign in</a> to sign with your name.' % html.escape(
            users.create_login_url(here))
    body = PAGE.format(account=account, name=html.escape(name),
                       greetings=render_greetings(name),
                       query=html.escape(urllib.parse.urlencode({'guestbook_name': name})))
    start_response('200 OK', [('Content-Type', 'text/html; charset=utf-8')])
    return [body.encode('utf-8')]


def sign(environ, start_response):
    params = urllib.parse.parse_qs(environ.get('QUERY_STRING', ''))
    name = params.get('guestbook_name', [DEFAULT_GUESTBOOK])[0]
    try:
        size = int(environ.get('CONTENT_LENGTH') or 0)
    except ValueError:
        size = 0
    form = urllib.parse.parse_qs(environ['wsgi.input'].read(size).decode('utf-8', 'replace'))
    content = form.get('content', [''])[0].strip()
    if content:
        Greeting(parent=guestbook_key(name), author=users.get_current_user(),
                 content=content).put()
        memcache.delete(cache_key(name))
    location = '/?' + urllib.parse.urlencode({'guestbook_name': name})
    start_response('303 See Other', [('Location', location), ('Content-Type', 'text/plain')])
    return [b'']


def guestbook(environ, start_response):
    path = environ.get('PATH_INFO', '/')
    method = environ.get('REQUEST_METHOD', 'GET')
    if path == '/' and method in ('GET', 'HEAD'):
        return main_page(environ, start_response)
    if path == '/sign' and method == 'POST':
        return sign(environ, start_response)
    if path == '/_ah/warmup':
        start_response('200 OK', [('Content-Type', 'text/plain')])
        return [b'warm\n']
    start_response('404 Not Found', [('Content-Type', 'text/plain')])
    return [b'not found\n']


app = wrap_wsgi_app(guestbook)
