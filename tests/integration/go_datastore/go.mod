module cyclozzo.test/dstest

go 1.19

require (
	google.golang.org/appengine/v2 v2.0.6
	google.golang.org/protobuf v1.30.0
)

require github.com/golang/protobuf v1.5.0 // indirect
