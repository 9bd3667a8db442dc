/** The embedding API: `open({ dataDir })` and the types a user needs. */
export { open, Reprise, type OpenOptions, type RuntimeStatus, type TableDescription } from './runtime.js';
export { createHttpServer } from './http.js';
export { RepriseError, isRepriseError, type ErrorCode } from '../errors.js';
export type { Row, TableQuery, TableSchema, ColumnDef, PartitionRule } from '../engine/schema.js';
export type { NodeStatus } from '../actors/node.js';
export type { ShardStatus } from '../actors/shard.js';
export type { RegionStatus } from '../actors/region.js';
export type { RuntimeObserver, RuntimeEvent } from './observe.js';
export { writeLineProtocol, type LineProtocolOptions, type LineProtocolResult } from './influxdb.js';
export { parseLineProtocol, type Point, type FieldValue, type LineError } from './line-protocol.js';
