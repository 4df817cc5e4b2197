module goprobe.example/demo

go 1.21
