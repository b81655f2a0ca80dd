"""Seed 000's objects as its user has them before graylane arrives, applied with `kubectl apply -f` like a user.

The routing objects are the seed's own text (IngressRoutes `k8s-flask-dev`, `k8s-flask-abtest`, `k8s-flask-pro`,
Middlewares `flask-k8s-traffic` and `k8s-flask-breaker`, group `traefik.containo.us` for Traefik v2.11, namespaces
`pro` and `dev`, hosts `dev.coding` / `pro.coding`), with what a real user adds to them: a route `priority`, a
Service's `passHostHeader`, labels and annotations of their own, and a Middleware of their own
(`flask-security-headers`, a response header on every pro answer) on the pro route. The workloads are the
seed repository's layout: `k8s-pro/` (Deployment and Service `k8s-flask`), `k8s-canary/` (`k8s-flask-canary`),
`k8s-dev/` (`k8s-flask-dev` behind the NodePort Service `k8s-flask-nodeport`), every pod on 8080.

The Deployments run `OLD` (an image from before graylane; the pod runner answers with the image's tag).
"""

from __future__ import annotations

OLD = "v0.9.0"
PORT = 8080
HOST, DEV_HOST = "pro.coding", "dev.coding"
PRO, DEV = "pro", "dev"
STABLE, CANARY, DEV_WORKLOAD, DEV_SERVICE = (
    "k8s-flask",
    "k8s-flask-canary",
    "k8s-flask-dev",
    "k8s-flask-nodeport",
)
PRO_ROUTE, ABTEST_ROUTE, DEV_ROUTE = "k8s-flask-pro", "k8s-flask-abtest", "k8s-flask-dev"
RATE_LIMIT, BREAKER, USER_HEADERS = "flask-k8s-traffic", "k8s-flask-breaker", "flask-security-headers"
USER_HEADER = ("X-Flask-Edge", "pro.coding")  # what the user's own Middleware adds to every pro answer
USER_LABEL = ("app.kubernetes.io/part-of", "cd-production")
USER_ANNOTATION = ("coding.net/pipeline", "devops.json")
ROUTE_PRIORITY = 10


def namespaces() -> str:
    return f"""\
apiVersion: v1
kind: Namespace
metadata: {{name: {PRO}}}
---
apiVersion: v1
kind: Namespace
metadata: {{name: {DEV}}}
"""


def _deployment(ns: str, name: str, image: str, replicas: int) -> str:
    return f"""\
apiVersion: apps/v1
kind: Deployment
metadata:
  name: {name}
  namespace: {ns}
  labels: {{app: {name}, {USER_LABEL[0]}: {USER_LABEL[1]}}}
spec:
  replicas: {replicas}
  selector:
    matchLabels: {{app: {name}}}
  strategy:
    type: RollingUpdate
    rollingUpdate: {{maxSurge: 1, maxUnavailable: 0}}
  template:
    metadata:
      labels: {{app: {name}}}
    spec:
      terminationGracePeriodSeconds: 1
      containers:
        - name: flask
          image: {image}
          ports:
            - {{containerPort: {PORT}, protocol: TCP}}
          env:
            - {{name: FLASK_ENV, value: {"development" if ns == DEV else "production"}}}
---
apiVersion: v1
kind: Service
metadata:
  name: {DEV_SERVICE if ns == DEV else name}
  namespace: {ns}
spec:
  type: {"NodePort" if ns == DEV else "ClusterIP"}
  selector: {{app: {name}}}
  ports:
    - {{name: http, port: {PORT}, targetPort: {PORT}, protocol: TCP}}
"""


def workloads(repository: str) -> str:
    """k8s-pro/, k8s-canary/ and k8s-dev/ of the seed's repository, running `repository:OLD`."""
    image = f"{repository}:{OLD}"
    return "---\n".join(
        [
            _deployment(PRO, STABLE, image, 2),
            _deployment(PRO, CANARY, image, 1),
            _deployment(DEV, DEV_WORKLOAD, image, 1),
        ]
    )


def routing(group: str = "traefik.containo.us") -> str:
    """devops/traefik/router/ of the seed, as the seed prints them, plus the user's own fields (marked)."""
    header = "Headers" if group == "traefik.containo.us" else "Header"  # traefik.io is Traefik v3's syntax
    return f"""\
apiVersion: {group}/v1alpha1
kind: IngressRoute
metadata:
  name: {DEV_ROUTE}
  namespace: {DEV}
spec:
  entryPoints:
  - web
  routes:
  - kind: Rule
    match: Host(`{DEV_HOST}`)
    services:
    - name: {DEV_SERVICE}
      port: {PORT}
      namespace: {DEV}
---
apiVersion: {group}/v1alpha1
kind: IngressRoute
metadata:
  name: {ABTEST_ROUTE}
  namespace: {PRO}
spec:
  entryPoints:
  - web
  routes:
  #A/B test
  - kind: Rule
    match: Host(`{HOST}`) && {header}(`location`, `shenzhen`)
    services:
    - name: {CANARY}
      port: {PORT}
      namespace: {PRO}
---
apiVersion: {group}/v1alpha1
kind: IngressRoute
metadata:
  name: {PRO_ROUTE}
  namespace: {PRO}
  labels:
    {USER_LABEL[0]}: {USER_LABEL[1]}          # the user's
  annotations:
    {USER_ANNOTATION[0]}: {USER_ANNOTATION[1]}  # the user's
spec:
  entryPoints:
  - web
  routes:
  #canary deploy
  - kind: Rule
    match: Host(`{HOST}`)
    priority: {ROUTE_PRIORITY}                   # the user's
    middlewares:
    - name: {USER_HEADERS}                       # the user's
    services:
    - name: {STABLE}
      port: {PORT}
      namespace: {PRO}
      passHostHeader: true                       # the user's
      weight: 50    # 权重比例
    - name: {CANARY}
      port: {PORT}
      namespace: {PRO}
      passHostHeader: true                       # the user's
      weight: 50    # 权重比例
---
apiVersion: {group}/v1alpha1
kind: Middleware
metadata:
  name: {RATE_LIMIT}
  namespace: {PRO}
spec:
  rateLimit:
    # 1s 内接收的请求数的平均值不大于500个，高峰最大1000个请求
    burst: 1000
    average: 500
---
# Latency Check
apiVersion: {group}/v1alpha1
kind: Middleware
metadata:
  name: {BREAKER}
  namespace: {PRO}
spec:
  circuitBreaker:
    expression: LatencyAtQuantileMS(50.0) > 100
    # 50% 的请求比例响应时间大于 100MS 时熔断
---
apiVersion: {group}/v1alpha1
kind: Middleware
metadata:
  name: {USER_HEADERS}                           # the user's
  namespace: {PRO}
spec:
  headers:
    customResponseHeaders:
      {USER_HEADER[0]}: {USER_HEADER[1]}
"""
