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

function loadServices() {
  const definition = protoLoader.loadSync(contractFiles(), {
    ...OBJECT_OPTIONS,
    includeDirs: INCLUDE_DIRS,
  });
  return grpc.loadPackageDefinition(definition).aftersales.v1;
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

function credentialsFor({ rootCerts, privateKey, certChain } = {}) {
  if (rootCerts || privateKey || certChain) {
    return grpc.credentials.createSsl(rootCerts || null, privateKey || null, certChain || null);
  }
  return grpc.credentials.createInsecure();
}

// The stubs of the three services on one channel. `token` (the signed token of the person the
// caller acts for) goes as `authorization: Bearer <token>` with every call; `rootCerts`,
// `privateKey` and `certChain` (Buffers) make the channel TLS with the caller's certificate.
function createClient(address, { token, ...tls } = {}) {
  services = services || loadServices();
  const options = {};
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

module.exports = { createClient, richError, INCLUDE_DIRS };
