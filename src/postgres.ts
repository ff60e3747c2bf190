// The Postgres transactional-outbox transport; needs the optional peer `pg`.
import { loadOptional } from './optional-peer';

loadOptional('postgres', () => require('pg'));

export { PostgresTransport, type PostgresTransportOptions } from './transport/postgres/transport';
