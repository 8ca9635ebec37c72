# Build: static binaries, no cgo.
FROM golang:1.27.3 AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
RUN CGO_ENABLED=0 go build -trimpath -ldflags='-s -w' -o /out/epsbroker ./cmd/epsbroker \
 && CGO_ENABLED=0 go build -trimpath -ldflags='-s -w' -o /out/epsctl ./cmd/epsctl \
 && mkdir -p /out/data

# Run: distroless static, non-root.
FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/epsbroker /out/epsctl /usr/local/bin/
COPY --from=build --chown=nonroot:nonroot /out/data /data
USER nonroot:nonroot
ENV EPS_DATA_DIR=/data EPS_HTTP_ADDR=0.0.0.0:8080
VOLUME ["/data"]
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/epsbroker"]
