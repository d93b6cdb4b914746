/**
 * Liveness (/health) and readiness (/ready: every configured dependency answers).
 * The checks run in parallel, each failing after READY_TIMEOUT_MS, so /ready
 * answers within that bound and names each check that failed (503).
 */
import type { FastifyInstance } from 'fastify';
import fp from 'fastify-plugin';
import { Type } from '@sinclair/typebox';

export interface ReadinessCheck {
  name: string;
  check(): Promise<void>;
}

declare module 'fastify' {
  interface FastifyInstance {
    readiness: ReadinessCheck[];
  }
}

export const healthPlugin = fp(
  async (app: FastifyInstance) => {
    app.decorate('readiness', [] as ReadinessCheck[]);

    app.get('/health', {
      schema: { tags: ['health'], security: [], response: { 200: Type.Object({ status: Type.Literal('healthy') }) } },
    }, async () => ({ status: 'healthy' as const }));

    app.get('/ready', {
      schema: {
        tags: ['health'],
        security: [],
        response: {
          '2xx': Type.Object({ status: Type.String(), checks: Type.Record(Type.String(), Type.String()) }),
          503: Type.Object({ status: Type.String(), checks: Type.Record(Type.String(), Type.String()) }),
        },
      },
    }, async (_req, reply) => {
      const timeoutMs = app.config.readyTimeoutMs;
      const results = await Promise.all(
        app.readiness.map(async (c) => {
          let timer: NodeJS.Timeout | undefined;
          try {
            await Promise.race([
              c.check(),
              new Promise((_, reject) => { timer = setTimeout(() => reject(new Error(`no answer within ${timeoutMs} ms`)), timeoutMs); }),
            ]);
            return [c.name, 'ok'] as const;
          } catch (err) {
            return [c.name, `failed: ${(err as Error).message || 'error'}`] as const;
          } finally {
            clearTimeout(timer);
          }
        }),
      );
      const checks = Object.fromEntries(results);
      const ok = results.every(([, v]) => v === 'ok');
      return reply.status(ok ? 200 : 503).send({ status: ok ? 'ready' : 'unavailable', checks });
    });
  },
  { name: 'health' },
);
