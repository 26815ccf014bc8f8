"""The KL playground (the same as `vae kl-demo`): forward vs reverse KL, Monte Carlo vs closed form,
maximum likelihood = minimum forward KL, and worked numbers. Writes three PNG figures and prints numbers.

python scripts/kl_playground.py --out docs/figures
"""

from vae.commands.kl_demo import main

if __name__ == "__main__":
    main()
