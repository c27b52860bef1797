// A Node.js client of the after-sales service: the repository's protos loaded at run time, and the
// rich error details of a refused call (google.rpc.Status in grpc-status-details-bin) decoded.
'use strict';

const fs = require('node:fs');
const path = require('node:path');
const grpc = require('@grpc/grpc-js');
const protoLoader = require('@grpc/proto-loader');
const protobuf = require('protobufjs');
const googleProtoFiles = require('google-proto-files');

const PROTOS = path.resolve(__dirname, '..', '..', 'protos');

// Where imports are looked up, first match wins: the repository's protos (with any google/api or
// google/rpc protos vendored beside them), then the googleapis copies of google-proto-files.
const INCLUDE_DIRS = [PROTOS, path.dirname(googleProtoFiles.getProtoPath())];

// Field names as in the .proto (snake_case, like the Python client's JSON), 64-bit integers and
// enums as strings, unset fields left out.
const OBJECT_OPTIONS = { keepCase: true, longs: String, enums: String, defaults: false };

const DETAILS_HEADER = 'grpc-status-details-bin';

function contractFiles() {
  const folder = path.join(PROTOS, 'aftersales', 'v1');
  return fs
    .readdirSync(folder)
    .filter((name) => name.endsWith('.proto'))
    .sort()
    .map((name) => `aftersales/v1/${name}`);
}

let definition;

function loadServices() {
  definition = protoLoader.loadSync(contractFiles(), {
    ...OBJECT_OPTIONS,
    includeDirs: INCLUDE_DIRS,
  });
  return grpc.loadPackageDefinition(definition).aftersales.v1;
}

// Nanoseconds as the protobuf JSON mapping writes a fraction of a second: nothing for none, else
// a point and 3, 6 or 9 digits.
function fraction(nanos) {
  if (!nanos) return '';
  const digits = String(nanos).padStart(9, '0');
  const kept = nanos % 1e6 === 0 ? 3 : nanos % 1e3 === 0 ? 6 : 9;
  return `.${digits.slice(0, kept)}`;
}

// A google.protobuf.Timestamp as the protobuf JSON mapping writes it: RFC 3339 in UTC, with 0,
// 3, 6 or 9 fractional digits (what the Python client prints).
function rfc3339({ seconds = '0', nanos = 0 }) {
  const whole = new Date(Number(seconds) * 1000).toISOString().slice(0, 19);
  return `${whole}${fraction(nanos)}Z`;
}

// A google.protobuf.Duration as the protobuf JSON mapping writes it: seconds with 0, 3, 6 or 9
// fractional digits and an "s" ("1s", "0.050s", "-1.500s"), what the Python client prints.
function durationJson({ seconds = '0', nanos = 0 }) {
  const whole = BigInt(seconds);
  const sign = whole < 0n || nanos < 0 ? '-' : '';
  return `${sign}${whole < 0n ? -whole : whole}${fraction(Math.abs(nanos))}s`;
}

// The well-known types the JSON mapping writes as strings, by full name.
const AS_STRINGS = {
  'google.protobuf.Timestamp': rfc3339,
  'google.protobuf.Duration': durationJson,
};

// The message `value` of the type named `typeName` (in package `pkg`), its timestamps (and any
// durations) written as in the protobuf JSON mapping.
function jsonOf(typeName, value, pkg = 'aftersales.v1') {
  const name = definition[`${pkg}.${typeName}`] ? `${pkg}.${typeName}` : typeName;
  if (AS_STRINGS[name]) return AS_STRINGS[name](value);
  const message = definition[name];
  if (!message || !message.type || value === null || typeof value !== 'object') return value;
  const fields = new Map(message.type.field.map((f) => [f.name, f]));
  const own = name.slice(0, name.lastIndexOf('.'));
  const out = {};
  for (const [key, item] of Object.entries(value)) {
    const field = fields.get(key);
    if (!field || field.type !== 'TYPE_MESSAGE') out[key] = item;
    else if (Array.isArray(item)) out[key] = item.map((one) => jsonOf(field.typeName, one, own));
    else out[key] = jsonOf(field.typeName, item, own);
  }
  return out;
}

// A response of `service`'s `method` ('AfterSalesEntry', 'OpenEntry') as JSON, as the Python
// client prints it.
function responseJson(service, method, response) {
  services = services || loadServices();
  const { type } = definition[`aftersales.v1.${service}`][method].responseType;
  return jsonOf(type.name, response);
}

function loadStatusTypes() {
  const root = new protobuf.Root();
  root.resolvePath = (origin, target) => {
    for (const dir of INCLUDE_DIRS) {
      const candidate = path.join(dir, target);
      if (fs.existsSync(candidate)) return candidate;
    }
    return protobuf.util.path.resolve(origin, target);
  };
  root.loadSync(['google/rpc/status.proto', 'google/rpc/error_details.proto'], { keepCase: true });
  return root.resolveAll();
}

let services;
let statusTypes;

// Transient failures (the server or its database unavailable, a transaction the database
// aborted) are retried by gRPC itself with the Python client's policy (client/client.py): twice,
// after 1 s then 2 s, as the server's RetryInfo asks. Safe for every method: reads have no effect,
// every mutation carries a request_id, so a retried one is answered from the server's record, and
// the puts are versioned upserts of a whole record.
const SERVICE_CONFIG = JSON.stringify({
  methodConfig: [
    {
      name: [
        { service: 'aftersales.v1.Sync' },
        { service: 'aftersales.v1.AfterSalesEntry' },
        { service: 'aftersales.v1.Clawback' },
        { service: 'aftersales.v1.Events', method: 'ListEvents' },
      ],
      retryPolicy: {
        maxAttempts: 3,
        initialBackoff: '1s',
        maxBackoff: '2s',
        backoffMultiplier: 2,
        retryableStatusCodes: ['UNAVAILABLE', 'ABORTED'],
      },
    },
  ],
});

function credentialsFor({ rootCerts, privateKey, certChain } = {}) {
  if (rootCerts || privateKey || certChain) {
    return grpc.credentials.createSsl(rootCerts || null, privateKey || null, certChain || null);
  }
  return grpc.credentials.createInsecure();
}

// The stubs of the four services on one channel: `entry` (AfterSalesEntry), `clawback`, `sync` and
// `events`. `token` (the signed token of the person the caller acts for) goes as
// `authorization: Bearer <token>` with every call; `rootCerts`, `privateKey` and `certChain`
// (Buffers) make the channel TLS with the caller's certificate.
function createClient(address, { token, ...tls } = {}) {
  services = services || loadServices();
  const options = { 'grpc.service_config': SERVICE_CONFIG, 'grpc.enable_retries': 1 };
  if (token) {
    options.interceptors = [
      (callOptions, nextCall) =>
        new grpc.InterceptingCall(nextCall(callOptions), {
          start(metadata, listener, next) {
            metadata.set('authorization', `Bearer ${token}`);
            next(metadata, listener);
          },
        }),
    ];
  }
  const credentials = credentialsFor(tls);
  const entry = new services.AfterSalesEntry(address, credentials, options);
  const shared = { ...options, channelOverride: entry.getChannel() };
  return {
    entry,
    clawback: new services.Clawback(address, credentials, shared),
    sync: new services.Sync(address, credentials, shared),
    events: new services.Events(address, credentials, shared),
    close: () => entry.close(),
  };
}

// The plain object `object` of the protobufjs `type` as the protobuf JSON mapping writes it: its
// timestamps and durations (RetryInfo.retry_delay) as strings, at any depth.
function canonical(type, object) {
  const asString = AS_STRINGS[type.fullName.slice(1)];
  if (asString) return asString(object);
  const out = {};
  for (const [key, value] of Object.entries(object)) {
    const field = type.fields[key];
    const inner = field && field.resolvedType;
    if (!(inner instanceof protobuf.Type)) out[key] = value;
    else if (field.map) {
      out[key] = Object.fromEntries(
        Object.entries(value).map(([k, one]) => [k, canonical(inner, one)]),
      );
    } else if (field.repeated) out[key] = value.map((one) => canonical(inner, one));
    else out[key] = canonical(inner, value);
  }
  return out;
}

// Bytes as the JSON mapping writes them, base64.
const DETAIL_OPTIONS = { ...OBJECT_OPTIONS, bytes: String };

function decodeDetail(any) {
  const typeName = any.type_url.slice(any.type_url.lastIndexOf('/') + 1);
  let type;
  try {
    type = statusTypes.lookupType(typeName);
  } catch {
    return { '@type': any.type_url, value: Buffer.from(any.value).toString('base64') };
  }
  const object = type.toObject(type.decode(any.value), DETAIL_OPTIONS);
  return { '@type': any.type_url, ...canonical(type, object) };
}

// A failed call as {code, message, details}: the status code's name, the status message and each
// detail as its fields with "@type" (ErrorInfo, PreconditionFailure, BadRequest, ResourceInfo,
// RetryInfo...), in the protobuf JSON mapping the Python client's JSON is in (RetryInfo's
// retry_delay "1s").
function richError(err) {
  statusTypes = statusTypes || loadStatusTypes();
  const report = { code: grpc.status[err.code] || String(err.code), message: err.details || '' };
  const [encoded] = err.metadata ? err.metadata.get(DETAILS_HEADER) : [];
  if (!encoded) return { ...report, details: [] };
  const Status = statusTypes.lookupType('google.rpc.Status');
  const status = Status.decode(encoded);
  return { ...report, message: status.message, details: (status.details || []).map(decodeDetail) };
}

module.exports = { createClient, richError, responseJson, INCLUDE_DIRS };
