// @ts-check
// A tiny dependency-free static file server for web/ (the page and the exported plan).
//
//   node serve.mjs [--port N]        (or PORT=N; default 8080), serves on 127.0.0.1
//
// .gz files are served as raw bytes (application/octet-stream, no Content-Encoding): the page
// inflates them itself with DecompressionStream. Importable: `startServer({port, root})`.

import { createServer } from 'node:http';
import { createReadStream } from 'node:fs';
import { stat } from 'node:fs/promises';
import { extname, join, resolve, sep } from 'node:path';
import { fileURLToPath } from 'node:url';

const HERE = fileURLToPath(new URL('.', import.meta.url));

/** @type {Record<string, string>} */
const MIME = {
  '.html': 'text/html; charset=utf-8',
  '.js': 'text/javascript; charset=utf-8',
  '.mjs': 'text/javascript; charset=utf-8',
  '.json': 'application/json; charset=utf-8',
  '.css': 'text/css; charset=utf-8',
  '.wgsl': 'text/plain; charset=utf-8',
  '.txt': 'text/plain; charset=utf-8',
  '.md': 'text/plain; charset=utf-8',
  '.png': 'image/png',
  '.svg': 'image/svg+xml',
  '.ico': 'image/x-icon',
  '.bin': 'application/octet-stream',
  '.gz': 'application/octet-stream',
};

/**
 * Start serving `root` on 127.0.0.1.
 * @param {{port?: number, root?: string, quiet?: boolean}} [opts] port 0 picks a free port
 * @returns {Promise<{server: import('node:http').Server, url: string}>}
 */
export function startServer(opts = {}) {
  const root = resolve(opts.root ?? HERE);
  const port = opts.port ?? 8080;
  const server = createServer(async (req, res) => {
    /** @param {number} code @param {string} msg */
    const fail = (code, msg) => {
      res.writeHead(code, { 'Content-Type': 'text/plain; charset=utf-8' });
      res.end(msg + '\n');
    };
    try {
      if (req.method !== 'GET' && req.method !== 'HEAD') {
        return fail(405, 'method not allowed');
      }
      const url = new URL(req.url ?? '/', 'http://localhost');
      let rel;
      try {
        rel = decodeURIComponent(url.pathname);
      } catch {
        return fail(400, 'bad path');
      }
      if (rel.includes('\0')) return fail(400, 'bad path');
      let file = resolve(join(root, rel));
      // No way out of root (.., encoded .., absolute paths).
      if (file !== root && !file.startsWith(root + sep)) return fail(403, 'forbidden');
      let st;
      try {
        st = await stat(file);
        if (st.isDirectory()) {
          if (!url.pathname.endsWith('/')) {
            res.writeHead(301, { Location: url.pathname + '/' + url.search });
            return res.end();
          }
          file = join(file, 'index.html');
          st = await stat(file);
        }
      } catch {
        return fail(404, `not found: ${url.pathname}`);
      }
      if (!st.isFile()) return fail(404, `not found: ${url.pathname}`);
      res.writeHead(200, {
        'Content-Type': MIME[extname(file).toLowerCase()] ?? 'application/octet-stream',
        'Content-Length': String(st.size),
        'Cache-Control': 'no-cache',
      });
      if (req.method === 'HEAD') return res.end();
      const stream = createReadStream(file);
      stream.on('error', () => res.destroy());
      stream.pipe(res);
    } catch (e) {
      if (!res.headersSent) fail(500, String(e));
      else res.destroy();
    }
  });
  return new Promise((ok, err) => {
    server.once('error', err);
    server.listen(port, '127.0.0.1', () => {
      const addr = server.address();
      const p = typeof addr === 'object' && addr ? addr.port : port;
      const url = `http://127.0.0.1:${p}/`;
      if (!opts.quiet) console.log(`serving ${root} at ${url}`);
      ok({ server, url });
    });
  });
}

/** @param {string[]} argv */
function portFromArgs(argv) {
  const i = argv.findIndex((a) => a === '--port' || a.startsWith('--port='));
  const raw = i < 0 ? process.env.PORT : argv[i].includes('=') ? argv[i].split('=')[1] : argv[i + 1];
  if (raw === undefined || raw === '') return 8080;
  const n = Number(raw);
  if (!Number.isInteger(n) || n < 0 || n > 65535) {
    console.error(`error: bad port '${raw}' (want an integer 0-65535)`);
    process.exit(2);
  }
  return n;
}

if (process.argv[1] && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  startServer({ port: portFromArgs(process.argv.slice(2)) }).catch((e) => {
    console.error(`error: ${e.message}`);
    process.exit(1);
  });
}
