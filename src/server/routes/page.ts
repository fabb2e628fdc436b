/** The page: its HTML, script and style, built or prebuilt (../assets.ts). */
import type { FastifyPluginAsync, FastifyReply, FastifyRequest } from 'fastify';
import type { ServerContext } from '../context.js';

export const pageRoutes: FastifyPluginAsync<{ ctx: ServerContext }> = async (app, { ctx }) => {
  const sendAsset = (name: string) => async (_req: FastifyRequest, reply: FastifyReply) => {
    const a = ctx.assets.get(name);
    if (!a) return reply.code(404).send({ error: 'the page is not available (server started without it)' });
    return reply.type(a.type).header('cache-control', 'no-cache').send(a.body);
  };
  app.get('/', sendAsset('index.html'));
  app.get('/index.html', sendAsset('index.html'));
  app.get('/app.js', sendAsset('app.js'));
  app.get('/style.css', sendAsset('style.css'));
};
