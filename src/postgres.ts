// The Postgres transactional-outbox transport; needs the optional peer `pg`.
export { PostgresTransport, type PostgresTransportOptions } from './transport/postgres';
