// Package compat checks that the official Huawei Cloud Go SDK
// (github.com/huaweicloud/huaweicloud-sdk-go-v3, KMS client services/kms/v2) works
// against kmsd without any change. It has its own module so that the SDK never becomes a
// dependency of the service.
//
// The tests build kmsd from the parent module and start it as a process on a fresh data
// directory (embedded SoftHSM2 token and SQLite file) on a free 127.0.0.1 port. They
// drive it through the SDK with an endpoint override and a project id. Tests of operation
// groups that kmsd does not route yet skip themselves: each probes its route once and
// skips when kmsd responds 404 with KMS.0201.
//
// Run with `go test ./...` in this directory. SoftHSM2 must be installed
// (/usr/lib/softhsm/libsofthsm2.so), as for kmsd itself. KMS_COMPAT_KMSD, when set,
// names a kmsd binary to test in place of building one.
package compat
