// Package servicepb holds the generated gRPC code of the service plugin
// contract (service.proto). Regenerate with `go generate ./...`; it needs
// protoc, protoc-gen-go and protoc-gen-go-grpc on PATH.
package servicepb

//go:generate protoc --go_out=. --go_opt=paths=source_relative --go-grpc_out=. --go-grpc_opt=paths=source_relative service.proto
