module goprobe.bench/goroutines_pprof

go 1.21
