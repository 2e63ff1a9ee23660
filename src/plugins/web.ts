import { fileURLToPath } from 'node:url';
import fastifyStatic from '@fastify/static';
import type { FastifyInstance } from 'fastify';

/**
 * `public/` sits beside `src/` and `dist/`, so the same relative step works whether this
 * file runs as src/plugins/web.ts (tsx, tests) or as dist/plugins/web.js (`npm start`).
 */
export const PUBLIC_DIR = fileURLToPath(new URL('../../public/', import.meta.url));

/**
 * The browser page at `/` (public/index.html, app.js, styles.css). Only the files present at
 * start-up get routes (`wildcard: false`), so every other path still reaches the JSON 404.
 */
export default async function webPlugin(app: FastifyInstance) {
  await app.register(fastifyStatic, {
    root: PUBLIC_DIR,
    prefix: '/',
    wildcard: false,
    index: 'index.html',
    // @fastify/swagger-ui registers its own copy; ours needs no reply.sendFile.
    decorateReply: false,
    // The page is not part of the API: keep it out of /openapi.json.
    schemaHide: true,
    // Always revalidate, so a deployment is seen on the next load.
    cacheControl: true,
    maxAge: 0,
  });
}
