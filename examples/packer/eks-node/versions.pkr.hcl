# Current Packer (1.7+) installs builders as plugins: `packer init` reads this block and downloads the Amazon
# plugin from GitHub. In clusters without egress to GitHub, use a builder image with the plugin baked in
# (images/packer/Dockerfile) or point PACKER_PLUGIN_PATH at a volume that has it; behind GitHub's API rate limit,
# set PACKER_GITHUB_API_TOKEN through the builder Secret.
packer {
  required_plugins {
    amazon = {
      version = ">= 1.3.0"
      source  = "github.com/hashicorp/amazon"
    }
  }
}
