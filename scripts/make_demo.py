"""Build demo/ : a few hundred fashion products from the validation split (never trained on).

Run once by a developer with ../shared/data present; the result is committed with its attribution.
"""

import shutil
import sys
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from engine.training import split_validation

REPO = Path(__file__).resolve().parents[1]
SOURCE = REPO.parent / "shared" / "data" / "fashion"
CATEGORIES = ["Tshirts", "Shirts", "Casual Shoes", "Watches", "Sports Shoes", "Kurtas", "Tops", "Handbags",
              "Heels", "Sunglasses", "Wallets", "Flip Flops", "Sandals", "Belts", "Backpacks", "Jeans",
              "Socks", "Perfume and Body Mist", "Earrings", "Dresses", "Caps", "Track Pants", "Shorts", "Trousers"]
PER_CATEGORY = 10

frame = pd.read_csv(SOURCE / "catalog.csv")
validation = split_validation(frame.id.astype(str).tolist(), 0.25, seed=0)
frame = frame[frame.id.astype(str).isin(validation)]
demo = pd.concat([frame[frame.category == c].head(PER_CATEGORY) for c in CATEGORIES])
out = REPO / "demo"
(out / "images").mkdir(parents=True, exist_ok=True)
for image in demo.image:
    shutil.copy(SOURCE / image, out / image)
demo.to_csv(out / "catalog.csv", index=False)
print(f"{len(demo)} products written to {out}")

# A shopper-like photo: not the catalog shot but a tilted, cropped, darker picture on a grey table.
from PIL import Image, ImageEnhance

(out / "queries").mkdir(exist_ok=True)
for category, name in [("Handbags", "handbag"), ("Watches", "watch"), ("Sports Shoes", "shoe")]:
    row = demo[demo.category == category].iloc[1]
    photo = Image.open(SOURCE / row.image).convert("RGB")
    photo = photo.rotate(12, expand=True, fillcolor=(150, 145, 140)).crop((18, 10, 240, 236))
    photo = ImageEnhance.Brightness(photo).enhance(0.8)
    photo = ImageEnhance.Color(photo).enhance(1.2).resize((320, 320))
    photo.save(out / "queries" / f"{name}.jpg", quality=85)
    print(f"demo/queries/{name}.jpg shows product {row.id}: {row.title}")
