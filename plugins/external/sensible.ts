import sensible from '@fastify/sensible'

// HTTP errors and helpers (reply.notFound(), httpErrors) used by routes.
export default sensible
