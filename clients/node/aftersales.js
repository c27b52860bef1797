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

// A google.protobuf.Timestamp as the protobuf JSON mapping writes it: RFC 3339 in UTC, with 0,
// 3, 6 or 9 fractional digits (what the Python client prints).
function rfc3339({ seconds = '0', nanos = 0 }) {
  const whole = new Date(Number(seconds) * 1000).toISOString().slice(0, 19);
  if (!nanos) return `${whole}Z`;
  const digits = String(nanos).padStart(9, '0');
  const kept = nanos % 1e6 === 0 ? 3 : nanos % 1e3 === 0 ? 6 : 9;
  return `${whole}.${digits.slice(0, kept)}Z`;
}

// The message `value` of the type named `typeName` (in package `pkg`), its timestamps written as
// in the protobuf JSON mapping.
function jsonOf(typeName, value, pkg = 'aftersales.v1') {
  const name = definition[`${pkg}.${typeName}`] ? `${pkg}.${typeName}` : typeName;
  if (name === 'google.protobuf.Timestamp') return rfc3339(value);
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
  return root;
}

let services;
let statusTypes;

// Transient failures (the server or its database unavailable, a transaction the database
// aborted) are retried by gRPC itself, as by the Python client (client/client.py). Safe for every
// method: reads have no effect and every mutation carries a request_id, so a retried one is
// answered from the server's record.
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
        maxAttempts: 4,
        initialBackoff: '0.1s',
        maxBackoff: '1s',
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

function decodeDetail(any) {
  const typeName = any.type_url.slice(any.type_url.lastIndexOf('/') + 1);
  let type;
  try {
    type = statusTypes.lookupType(typeName);
  } catch {
    return { '@type': any.type_url, value: Buffer.from(any.value).toString('base64') };
  }
  return { '@type': any.type_url, ...type.toObject(type.decode(any.value), OBJECT_OPTIONS) };
}

// A failed call as {code, message, details}: the status code's name, the status message and each
// detail as its fields with "@type" (ErrorInfo, PreconditionFailure, BadRequest, ResourceInfo,
// RetryInfo...), the shape the Python client's JSON gives.
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
