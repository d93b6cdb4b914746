/**
 * Decorates `app.jobs` (src/jobs/system.ts). In the embedded default (no
 * REDIS_URL) the process runs its background work itself: started when the app
 * is ready, stopped when it closes. With REDIS_URL the API starts nothing: the
 * worker process (`npm run worker`) does the work.
 *
 * Under NODE_ENV=test nothing starts by itself (tests stay deterministic and
 * drive the work with `processPendingJobs(app)`, or `app.jobs.start(...)`).
 * JOBS_AUTOSTART=true|false overrides both defaults.
 */
import type { FastifyInstance } from 'fastify';
import fp from 'fastify-plugin';
import { createJobSystem, type JobSystem } from './system.js';

declare module 'fastify' {
  interface FastifyInstance {
    jobs: JobSystem;
  }
}

export const jobsPlugin = fp(
  async (app: FastifyInstance) => {
    const jobs = createJobSystem(app);
    app.decorate('jobs', jobs);
    const override = process.env.JOBS_AUTOSTART?.trim().toLowerCase();
    const autostart = override ? ['1', 'true', 'yes', 'on'].includes(override) : app.config.env !== 'test';
    if (autostart && !app.config.redisUrl) {
      app.addHook('onReady', async () => {
        await jobs.start('embedded');
      });
    }
    // preClose: before the database and Redis connections are closed.
    app.addHook('preClose', async () => {
      await jobs.close();
    });
  },
  { name: 'jobs', dependencies: ['core', 'metrics'] },
);
