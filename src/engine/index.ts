/** Region storage: the RegionEngine contract, the object store and the table engine. */
export type { ObjectStore } from './object-store.js';
export type { FlushResult, PreparedMutation, PreparedWrite, Region, RegionDescriptor, RegionEngine, TableMutationCodec } from './region-engine.js';
export * from './schema.js';
export { FsObjectStore } from './fs-object-store.js';
export { TableEngine, TableRegion, type TableEngineOptions, type TableRegionStats } from './table/table-engine.js';
export { tableMutationCodec, decodeMutation, type Mutation } from './table/codec.js';
export { compareValues, rowKeyComparator } from './table/keys.js';
export { partitionCount, partitionOf, partitionsForQuery } from './table/partition.js';
export { validateKeys, validateQuery, validateSchema, type ValidateRowsOptions } from './table/validate.js';
