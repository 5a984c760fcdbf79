// A real Express 4 upstream for scopegate's end-to-end tests, with Express's default routing:
// case-insensitive, non-strict about a trailing slash, and `_method` honoured in urlencoded
// and multipart form bodies (the method-override README's own recipe; multipart read by multer,
// that is busboy, as most Express apps read it). Every handler that runs is recorded;
// GET /__hits on this server (never through the gateway) lists them.
//
//   node server.js [PORT]    (or PORT=...; 0 picks a free port) -> prints "listening PORT"
'use strict';

const express = require('express');
const methodOverride = require('method-override');
const multer = require('multer');

const app = express();
const hits = [];

function record(name) {
  return (req, res) => {
    hits.push({ handler: name, method: req.method, url: req.originalUrl });
    res.json({ handler: name, method: req.method, params: req.params });
  };
}

app.get('/__hits', (req, res) => res.json(hits));
app.delete('/__hits', (req, res) => {
  hits.length = 0;
  res.status(204).end();
});

// A multipart upload is recorded only once its body arrived complete.
app.post('/v1/uploads', (req, res) => {
  let size = 0;
  req.on('data', (chunk) => {
    size += chunk.length;
  });
  req.on('end', () => {
    hits.push({ handler: 'upload', method: req.method, url: req.originalUrl, size });
    res.json({ handler: 'upload', size });
  });
});

app.use(express.urlencoded({ extended: false }));
app.use(multer().none()); // multipart text fields into req.body
app.use(
  methodOverride((req) => {
    if (req.body && typeof req.body === 'object' && '_method' in req.body) {
      const method = req.body._method;
      delete req.body._method;
      return method;
    }
    return undefined;
  })
);
app.use(methodOverride('_method')); // the query string too

app.post('/v1/devices/:id/reboot', record('device-reboot'));
app.get('/v1/devices/:id', record('device-get'));
app.get('/v1/devices', record('device-list'));
app.get('/reports/:name', record('report'));
app.get('/', record('home'));
app.post('/v1/items', record('items-create'));
app.delete('/v1/items', record('items-delete'));
app.get('/v1/items', record('items-list'));

const port = Number(process.argv[2] || process.env.PORT || 0);
const server = app.listen(port, '127.0.0.1', () => {
  console.log(`listening ${server.address().port}`);
});
process.on('SIGTERM', () => server.close(() => process.exit(0)));
