/**
 * Decorates `app.jobs` (src/jobs/system.ts). In the embedded default (no
 * REDIS_URL) the process runs its background work itself: started when the app
 * is ready, stopped when it closes. With REDIS_URL the API starts nothing: the
 * worker process (`npm run worker`) does the work.
 *
 * Under NODE_ENV=test nothing starts by itself (tests stay deterministic and
 * drive the work with `processPendingJobs(app)`, or `app.jobs.start(...)`).
 * JOBS_AUTOSTART=true|false overrides both defaults.
 *
 * On PostgreSQL the process also tells the others (a worker LISTENing on
 * `outbox`) when it committed outbox rows: at most one `NOTIFY outbox` per
 * 20 ms on the main database (src/events/wake.ts), whatever the database that
 * holds the rows (the main one or a dedicated tenant's).
 */
import type { FastifyInstance } from 'fastify';
import fp from 'fastify-plugin';
import { sql } from 'kysely';
import { createOutboxNotifier, registerOutboxNotifier } from '../events/wake.js';
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
    if (app.database.kind === 'postgres') {
      const notifier = createOutboxNotifier(() => sql`SELECT pg_notify('outbox', '')`.execute(app.db), {
        intervalMs: 20,
        log: app.log.child({ component: 'outbox-notify' }),
      });
      const unregister = registerOutboxNotifier(notifier);
      // Before the database connections are closed.
      app.addHook('preClose', async () => {
        unregister();
        await notifier.close();
      });
    }
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
