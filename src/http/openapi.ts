/** OpenAPI 3.1 generated from the route schemas, served at /api/docs. */
import type { FastifyInstance } from 'fastify';
import fp from 'fastify-plugin';
import swagger from '@fastify/swagger';
import swaggerUi from '@fastify/swagger-ui';

export const openapiPlugin = fp(
  async (app: FastifyInstance) => {
    await app.register(swagger, {
      openapi: {
        openapi: '3.1.0',
        info: {
          title: 'Tenantbase API',
          version: '0.1.0',
          description:
            'Multi-tenant SaaS backend: users and sign-in, organizations with members and roles, documents with ' +
            'background processing, quotas, events. Errors are RFC 9457 problem details with a stable `code`.',
        },
        components: {
          securitySchemes: {
            bearerAuth: { type: 'http', scheme: 'bearer', bearerFormat: 'JWT' },
            cookieAuth: { type: 'apiKey', in: 'cookie', name: 'session' },
          },
        },
        security: [{ bearerAuth: [] }, { cookieAuth: [] }],
        tags: [
          { name: 'auth' }, { name: 'users' }, { name: 'tenants' }, { name: 'documents' },
          { name: 'files' }, { name: 'health' },
        ],
      },
    });
    await app.register(swaggerUi, { routePrefix: '/api/docs', staticCSP: true });
    app.get('/api/docs/openapi.json', { schema: { hide: true } }, async () => app.swagger());
  },
  { name: 'openapi' },
);
