module layoutprobe

go 1.21
