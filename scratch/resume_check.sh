set -e
D=$(mktemp -d); cd $D
node -e "
const y=require('/work/main/node_modules/js-yaml');const fs=require('fs');
fs.writeFileSync('c.yaml', y.dump({name:'x',backend:'$1',model:{name:'unet',base:4,depth:2},data:{name:'synthetic',root:'$D/data',size:[32,32],synthetic:{kind:'lesion',train:16,val:8,image_size:40}},training:{epochs:2,batch_size:4,workers:1,print_interval:1,val_interval:1,optimizer:{name:'adam',lr:0.003}},checkpoint:{ckpt_root:'$D/ck'},results:{root:'$D/res',gallery_size:4}}));"
N="node /work/main/dist/train.js --config c.yaml"
$N --set name=straight > /dev/null 2>&1
$N --set name=resumed --set training.epochs=1 > /dev/null 2>&1
$N --set name=resumed --resume > /dev/null 2>&1
cat res/straight/history.jsonl | cut -c1-90; echo; cat res/resumed/history.jsonl | cut -c1-90
cmp ck/straight/last/weights.bin ck/resumed/last/weights.bin && echo IDENTICAL
