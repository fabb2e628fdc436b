/** onnxruntime-web's browser files (wasm and its loader), which the page's in-browser mode fetches. */
import * as fsp from 'node:fs/promises';
import * as path from 'node:path';
import type { FastifyPluginAsync } from 'fastify';
import { ORT_FILES, ortWebDir } from '../assets.js';

export const ortRoutes: FastifyPluginAsync = async (app) => {
  const ortDir = ortWebDir();
  app.get<{ Params: { file: string } }>('/ort/:file', async (req, reply) => {
    const type = ORT_FILES.get(req.params.file);
    if (!type || !ortDir) return reply.code(404).send({ error: `not found: /ort/${req.params.file}` });
    const body = await fsp.readFile(path.join(ortDir, req.params.file));
    return reply.type(type).header('cache-control', 'public, max-age=86400').send(body);
  });
};
