export {
  DEFAULT_MAX_PAYLOAD_BYTES,
  SUBJECT_ROOT,
  isRetryable,
  stderrLogger,
  subjectOf,
  subjectPatternOf,
  type EventHandler,
  type MessageInfo,
  type RequestHandler,
  type RequestOptions,
  type Subscription,
  type SubscriptionOptions,
  type Transport,
  type TransportLogger,
} from './transport.js';
export {
  Faults,
  InProcessNetwork,
  InProcessTransport,
  type FaultMessage,
  type FaultOptions,
  type FaultPredicate,
  type FaultRule,
  type InProcessNetworkOptions,
  type InProcessTransportOptions,
} from './in-process.js';
export { NatsTransport, type NatsTransportOptions } from './nats.js';
